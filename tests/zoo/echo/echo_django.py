"""Parser zoo: Django 5.2 (PyPI) behind gunicorn (PyPI), both with their defaults.

A single-file project: settings.configure() with DEBUG=False, ALLOWED_HOSTS=['*'], no middleware
at all (so no CSRF check) and every other setting at Django's default (DEFAULT_CHARSET utf-8,
DATA_UPLOAD_MAX_NUMBER_FIELDS 1000, DATA_UPLOAD_MAX_MEMORY_SIZE 2.5 MB, FORCE_SCRIPT_NAME None).
One catch-all URL pattern. Reports request.GET.lists() as "query", request.POST.lists() as
"form" (lists, as Django holds them), "params" null. An exception raised while building either
QueryDict (TooManyFieldsSent, RequestDataTooBig, MultiPartParserError, ...) is reported in
"parse_error" ("GET: Class: message; ...") and that view is null. Headers as wsgi_echo.py says.

Run: gunicorn --chdir tests/zoo/echo -b 127.0.0.1:PORT echo_django:application
"""
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="parser-zoo-not-a-secret",
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

from django.core.handlers.wsgi import get_script_name  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import re_path  # noqa: E402
from wsgi_echo import answer  # noqa: E402


def view(request):
    body = answer("django", request, request.META, {"query": "GET", "form": "POST"},
                  route=request.path_info, script_name=get_script_name(request.META))
    return HttpResponse(body, content_type="application/json", status=200)


urlpatterns = [re_path(r"^.*$", view)]

application = get_wsgi_application()
