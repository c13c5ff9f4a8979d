// Parser zoo: Jetty 9.4 (Debian libjetty9-java), embedded, javax.servlet.
// A Server with its default HttpConfiguration and one ServerConnector on 127.0.0.1, one
// ServletContextHandler at the root context ("/", so getContextPath() is ""), one servlet mapped
// to "/*". No setCharacterEncoding and no form limits changed: Jetty's defaults decide the query
// charset (UTF-8), the form charset, which methods get their form body parsed, and the limits
// (maxFormKeys, maxFormContentSize). Reports request.getParameterMap() as "params" (ZooJson.echo).
// Jetty throws on some bad parameters (e.g. BadMessageException): that is caught and reported as
// "parse_error".
// Usage: java -cp ... JettyEcho PORT
import java.io.IOException;
import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class JettyEcho extends HttpServlet {
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        // Jetty flags nothing: it throws (caught in ZooJson.echo).
        byte[] body = ZooJson.echo("jetty", req.getMethod(), req.getServletPath(), req.getPathInfo(),
            req.getContextPath(), req::getParameterMap, () -> null, req.getHeaderNames(),
            req::getHeaders);
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
