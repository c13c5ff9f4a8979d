"""Parser zoo: Werkzeug 3 (PyPI) request parsing in a raw WSGI app, behind gunicorn (PyPI).

werkzeug.wrappers.Request with its class defaults (charset utf-8 with errors="replace",
max_form_parts 1000, max_form_memory_size, no max_content_length): request.args as "query",
request.form as "form", request.values as "params" (all MultiDict.lists(), so lists). An
exception raised by one of them (e.g. RequestEntityTooLarge) is reported in "parse_error"
("form: Class: message; ...") and that view is null. "route" is request.path, "script_name"
request.root_path. Headers as wsgi_echo.py says.

Run: gunicorn --chdir tests/zoo/echo -b 127.0.0.1:PORT echo_werkzeug:application
"""
from werkzeug.wrappers import Request

from wsgi_echo import answer


def application(environ, start_response):
    request = Request(environ)
    body = answer("werkzeug", request, environ, {"query": "args", "form": "form", "params": "values"},
                  route=request.path, script_name=request.root_path).encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
