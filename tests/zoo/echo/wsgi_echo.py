"""Parser zoo: the answer of the two WSGI echoes (echo_django.py, echo_werkzeug.py). They read a
request the same way and differ only in the framework whose request object parses it.

Headers are the WSGI environ's HTTP_* keys (plus CONTENT_TYPE/CONTENT_LENGTH) as gunicorn set
them; their values are WSGI "bytes as latin-1" strings. Each gunicorn worker imports this module
once, so "seq" counts the requests of that one echo.
"""
import json

_seq = 0


def answer(framework, request, environ, views, route, script_name):
    """The echo's JSON text for one request. `views` maps "query", "form" and "params" to the
    attribute of `request` whose .lists() is that view, or to None where the framework has no
    such view. An exception raised while reading one (frameworks parse lazily, on first access)
    is reported in "parse_error" ("ATTR: Class: message; ...") and that view is null."""
    global _seq
    _seq += 1
    errors = []

    def lists(attr):
        if attr is None:
            return None
        try:
            return {k: v for k, v in getattr(request, attr).lists()}
        except Exception as e:  # report whatever the framework raised, never crash
            errors.append(f"{attr}: {type(e).__name__}: {e}")
            return None

    read = {view: lists(views.get(view)) for view in ("query", "form", "params")}
    headers = {
        k: [v]
        for k, v in environ.items()
        if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }
    return json.dumps({
        "framework": framework,
        "seq": _seq,
        "method": request.method,
        "route": route,
        "script_name": script_name,
        **read,
        "headers": headers,
        "parse_error": "; ".join(errors) or None,
    })
