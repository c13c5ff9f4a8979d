"""A werkzeug upstream for the Chromium cookie case: answers every request with the cookies
werkzeug read (`request.cookies`) and the Cookie header(s) as the WSGI server passed them.

    cookie_app.py PORT

Served by werkzeug's own development server (`run_simple`, threaded), the way a Flask app is
often run behind a proxy, so the server's own header handling is part of what is tested.
"""

import json
import sys

from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response


@Request.application
def app(request):
    body = {
        "cookies": request.cookies.to_dict(flat=False),
        "http_cookie": request.environ.get("HTTP_COOKIE"),
        "protocol": request.environ.get("SERVER_PROTOCOL"),
    }
    return Response(json.dumps(body), content_type="application/json")


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
