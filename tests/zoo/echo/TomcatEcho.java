// Parser zoo: Apache Tomcat 10.1 (Debian libtomcat10-java), embedded, jakarta.servlet.
// One servlet mapped to "/*" in the root context (context path ""), everything else Tomcat's
// defaults: the default HTTP/1.1 (NIO) connector (URIEncoding UTF-8, maxParameterCount,
// relaxedQueryChars/relaxedPathChars unset, parseBodyMethods=POST, maxPostSize 2 MiB) and no
// setCharacterEncoding, so the body charset is whatever Tomcat derives from Content-Type (or its
// default). Reports request.getParameterMap() as "params"; "query" and "form" stay null because
// a servlet container offers no separate view without us parsing the query ourselves.
// Usage: java -cp ... TomcatEcho PORT BASEDIR
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.catalina.Context;
import org.apache.catalina.startup.Tomcat;

public class TomcatEcho extends HttpServlet {
    private static final AtomicLong SEQ = new AtomicLong();

    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        long seq = SEQ.incrementAndGet();
        String params = "null";
        String error = null;
        try {
            Map<String, List<String>> m = new LinkedHashMap<>();
            for (Map.Entry<String, String[]> e : req.getParameterMap().entrySet())
                m.put(e.getKey(), Arrays.asList(e.getValue()));
            params = ZooJson.multi(m);
        } catch (RuntimeException e) {
            error = e.toString();
        }
        // Tomcat does not throw on a bad parameter: it logs, skips, and flags the request.
        Object failed = req.getAttribute("org.apache.catalina.parameter_parse_failed_reason");
        if (failed == null && req.getAttribute("org.apache.catalina.parameter_parse_failed") != null)
            failed = "parameter_parse_failed";
        if (failed != null) error = (error == null ? "" : error + "; ") + "parameter_parse_failed_reason=" + failed;

        Map<String, List<String>> headers = new LinkedHashMap<>();
        for (String name : Collections.list(req.getHeaderNames())) {
            String key = name.toLowerCase(Locale.ROOT);
            if (!headers.containsKey(key)) headers.put(key, Collections.list(req.getHeaders(name)));
        }
        String route = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        String json = new ZooJson()
            .field("framework", ZooJson.str("tomcat"))
            .field("seq", Long.toString(seq))
            .field("method", ZooJson.str(req.getMethod()))
            .field("route", ZooJson.str(route))
            .field("script_name", ZooJson.str(req.getContextPath()))
            .field("query", "null")
            .field("form", "null")
            .field("params", params)
            .field("headers", ZooJson.multi(headers))
            .field("parse_error", ZooJson.str(error))
            .done();
        byte[] body = json.getBytes(StandardCharsets.US_ASCII);
        resp.setStatus(200);
        resp.setContentType("application/json");
        resp.setContentLength(body.length);
        resp.getOutputStream().write(body);
    }

    public static void main(String[] args) throws Exception {
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(args[1]);
        tomcat.setPort(Integer.parseInt(args[0]));
        tomcat.getConnector().setProperty("address", "127.0.0.1");
        Context ctx = tomcat.addContext("", null);
        Tomcat.addServlet(ctx, "echo", new TomcatEcho());
        ctx.addServletMapping("/*", "echo");
        tomcat.start();
        tomcat.getServer().await();
    }
}
