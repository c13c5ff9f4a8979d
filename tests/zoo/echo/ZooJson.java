// Parser zoo: the JSON writer shared by TomcatEcho and JettyEcho (plain Java, no servlet types).
// Output is pure ASCII: every char outside 0x20..0x7e (and '"' and '\') is written as a \\uXXXX
// escape of its UTF-16 code unit, so a lone surrogate that a container hands us is reported as
// is (e.g. "\udc80") instead of failing or being replaced.
import java.util.List;
import java.util.Map;

final class ZooJson {
    private final StringBuilder out = new StringBuilder();

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
