// Parser zoo: the answer shared by TomcatEcho and JettyEcho and its JSON writer (plain Java, no
// servlet types: Tomcat 10's servlet API is jakarta.servlet, Jetty 9's javax.servlet, so the
// servlets hand over what they read instead of their request). Output is pure ASCII: every char outside 0x20..0x7e (and '"' and '\') is written as a \\uXXXX
// escape of its UTF-16 code unit, so a lone surrogate that a container hands us is reported as
// is (e.g. "\udc80") instead of failing or being replaced.
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import java.util.function.Supplier;

final class ZooJson {
    private static final AtomicLong SEQ = new AtomicLong();
    private final StringBuilder out = new StringBuilder();

    /**
     * The echo's answer to one request. parameterMap is the container's getParameterMap (it
     * parses on first call); "query" and "form" stay null because a servlet container offers no
     * separate view without us parsing the query ourselves. parseFailure is read after it: what
     * the container flagged instead of throwing, or null.
     */
    static byte[] echo(String framework, String method, String servletPath, String pathInfo,
                       String contextPath, Supplier<Map<String, String[]>> parameterMap,
                       Supplier<Object> parseFailure, Enumeration<String> headerNames,
                       Function<String, Enumeration<String>> headerValues) {
        long seq = SEQ.incrementAndGet();
        String params = "null";
        String error = null;
        try {
            Map<String, List<String>> m = new LinkedHashMap<>();
            for (Map.Entry<String, String[]> e : parameterMap.get().entrySet())
                m.put(e.getKey(), Arrays.asList(e.getValue()));
            params = multi(m);
        } catch (RuntimeException e) {
            error = e.toString();
        }
        Object failed = parseFailure.get();
        if (failed != null) error = (error == null ? "" : error + "; ") + "parameter_parse_failed_reason=" + failed;

        Map<String, List<String>> headers = new LinkedHashMap<>();
        for (String name : Collections.list(headerNames)) {
            String key = name.toLowerCase(Locale.ROOT);
            if (!headers.containsKey(key)) headers.put(key, Collections.list(headerValues.apply(name)));
        }
        String route = servletPath + (pathInfo == null ? "" : pathInfo);
        String json = new ZooJson()
            .field("framework", str(framework))
            .field("seq", Long.toString(seq))
            .field("method", str(method))
            .field("route", str(route))
            .field("script_name", str(contextPath))
            .field("query", "null")
            .field("form", "null")
            .field("params", params)
            .field("headers", multi(headers))
            .field("parse_error", str(error))
            .done();
        return json.getBytes(StandardCharsets.US_ASCII);
    }

    static String str(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c >= 0x20 && c < 0x7f) b.append(c);
            else b.append(String.format("\\u%04x", (int) c));
        }
        return b.append('"').toString();
    }

    /** name -> list of values, in the map's own iteration order. */
    static String multi(Map<String, ? extends List<String>> m) {
        if (m == null) return "null";
        StringBuilder b = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, ? extends List<String>> e : m.entrySet()) {
            if (!first) b.append(',');
            first = false;
            b.append(str(e.getKey())).append(':').append('[');
            boolean f2 = true;
            for (String v : e.getValue()) {
                if (!f2) b.append(',');
                f2 = false;
                b.append(str(v));
            }
            b.append(']');
        }
        return b.append('}').toString();
    }

    ZooJson field(String name, String rawJson) {
        out.append(out.length() == 0 ? "{" : ",").append(str(name)).append(':').append(rawJson);
        return this;
    }

    String done() {
        return out.append('}').toString();
    }
}
