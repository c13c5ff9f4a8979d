"""Parser zoo: Werkzeug 3 (PyPI) request parsing in a raw WSGI app, behind gunicorn (PyPI).

werkzeug.wrappers.Request with its class defaults (charset utf-8 with errors="replace",
max_form_parts 1000, max_form_memory_size, no max_content_length): request.args as "query",
request.form as "form", request.values as "params" (all MultiDict.lists(), so lists). An
exception raised by one of them (e.g. RequestEntityTooLarge) is reported in "parse_error"
("form: Class: message; ...") and that view is null. "route" is request.path, "script_name"
request.root_path. Headers are the WSGI environ's HTTP_* keys (plus CONTENT_TYPE/CONTENT_LENGTH)
as gunicorn set them; their values are WSGI "bytes as latin-1" strings.

Run: gunicorn --chdir tests/zoo/echo -b 127.0.0.1:PORT echo_werkzeug:application
"""
import json

from werkzeug.wrappers import Request

_seq = 0


def application(environ, start_response):
    global _seq
    _seq += 1
    request = Request(environ)
    errors = []

    def lists(attr):
        try:
            return {k: v for k, v in getattr(request, attr).lists()}
        except Exception as e:  # report whatever Werkzeug raised, never crash
            errors.append(f"{attr}: {type(e).__name__}: {e}")
            return None

    query = lists("args")
    form = lists("form")
    params = lists("values")
    headers = {
        k: [v]
        for k, v in environ.items()
        if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    out = {
        "framework": "werkzeug",
        "seq": _seq,
        "method": request.method,
        "route": request.path,
        "script_name": request.root_path,
        "query": query,
        "form": form,
        "params": params,
        "headers": headers,
        "parse_error": "; ".join(errors) or None,
    }
    body = json.dumps(out).encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
