// Parser zoo: Apache Tomcat 10.1 (Debian libtomcat10-java), embedded, jakarta.servlet.
// One servlet mapped to "/*" in the root context (context path ""), everything else Tomcat's
// defaults: the default HTTP/1.1 (NIO) connector (URIEncoding UTF-8, maxParameterCount,
// relaxedQueryChars/relaxedPathChars unset, parseBodyMethods=POST, maxPostSize 2 MiB) and no
// setCharacterEncoding, so the body charset is whatever Tomcat derives from Content-Type (or its
// default). Reports request.getParameterMap() as "params" (ZooJson.echo).
// Usage: java -cp ... TomcatEcho PORT BASEDIR
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import org.apache.catalina.Context;
import org.apache.catalina.startup.Tomcat;

public class TomcatEcho extends HttpServlet {
    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        byte[] body = ZooJson.echo("tomcat", req.getMethod(), req.getServletPath(), req.getPathInfo(),
            req.getContextPath(), req::getParameterMap, () -> parseFailure(req), req.getHeaderNames(),
            req::getHeaders);
        resp.setStatus(200);
        resp.setContentType("application/json");
        resp.setContentLength(body.length);
        resp.getOutputStream().write(body);
    }

    /** Tomcat does not throw on a bad parameter: it logs, skips, and flags the request. */
    private static Object parseFailure(HttpServletRequest req) {
        Object failed = req.getAttribute("org.apache.catalina.parameter_parse_failed_reason");
        if (failed == null && req.getAttribute("org.apache.catalina.parameter_parse_failed") != null)
            failed = "parameter_parse_failed";
        return failed;
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
