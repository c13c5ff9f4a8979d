// Parser zoo: Jetty 9.4 (Debian libjetty9-java), embedded, javax.servlet.
// A Server with its default HttpConfiguration and one ServerConnector on 127.0.0.1, one
// ServletContextHandler at the root context ("/", so getContextPath() is ""), one servlet mapped
// to "/*". No setCharacterEncoding and no form limits changed: Jetty's defaults decide the query
// charset (UTF-8), the form charset, which methods get their form body parsed, and the limits
// (maxFormKeys, maxFormContentSize). Reports request.getParameterMap() as "params"; "query" and
// "form" stay null (no separate view without parsing the query ourselves). Jetty throws on some
// bad parameters (e.g. BadMessageException): that is caught and reported as "parse_error".
// Usage: java -cp ... JettyEcho PORT
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.atomic.AtomicLong;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class JettyEcho extends HttpServlet {
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
        Map<String, List<String>> headers = new LinkedHashMap<>();
        for (String name : Collections.list(req.getHeaderNames())) {
            String key = name.toLowerCase(Locale.ROOT);
            if (!headers.containsKey(key)) headers.put(key, Collections.list(req.getHeaders(name)));
        }
        String route = req.getServletPath() + (req.getPathInfo() == null ? "" : req.getPathInfo());
        String json = new ZooJson()
            .field("framework", ZooJson.str("jetty"))
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
        Server server = new Server();
        ServerConnector connector = new ServerConnector(server);
        connector.setHost("127.0.0.1");
        connector.setPort(Integer.parseInt(args[0]));
        server.addConnector(connector);
        ServletContextHandler ctx = new ServletContextHandler();
        ctx.setContextPath("/");
        ctx.addServlet(new ServletHolder(new JettyEcho()), "/*");
        server.setHandler(ctx);
        server.start();
        server.join();
    }
}
