"""The container suite's upstream on the host loopback: answers every request, records each one
(method, path, body) as a JSON line, serves an OP discovery document naming /authorize, and
answers /slow after a delay, for the SIGTERM drain check. Standard library only.

    python3 upstream.py PORT RECORD_FILE
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        with open(self.server.record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "body": body}) + "\n")
        if self.path.startswith("/.well-known/openid-configuration"):
            host = self.headers.get("host", "127.0.0.1")
            out = json.dumps({"issuer": f"http://{host}",
                              "authorization_endpoint": f"http://{host}/authorize"}).encode()
            kind = "application/json"
        else:
            if self.path.startswith("/slow"):
                time.sleep(float(self.path.partition("=")[2] or 3))
            out = f"upstream saw {self.command} {self.path}\n".encode()
            kind = "text/plain"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = answer


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.record = sys.argv[2]
    server.serve_forever()


if __name__ == "__main__":
    main()
