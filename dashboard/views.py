"""Site-wide pages that belong to no app: the health check and the error pages."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from dashboard.lib.badinput import wants_json


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers: answers without login, says only whether the dashboard DB answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok"})


def _error(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    """An error in the site's words: JSON under /api/, a page with a way back otherwise."""
    if wants_json(request):
        return JsonResponse({"error": message, "code": code}, status=status)
    return render(request, "error.html", {"status": status, "message": message}, status=status)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error(request, 404, "not_found", "There is nothing here: the address may be mistyped, "
                  "or what it named was removed.")  # fmt: skip


def forbidden(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The sentence the view refused with (PermissionDenied("…")), or a general one."""
    message = str(exception) or "Your role does not allow this here."
    return _error(request, 403, "forbidden", message)


def server_error(request: HttpRequest) -> HttpResponse:
    """Rendered without the navigation's database queries: the database may be what failed."""
    message = "Retort hit an error it did not expect; it is in the server's log. Try again."
    if wants_json(request):
        return JsonResponse({"error": message, "code": "server_error"}, status=500)
    return HttpResponse(render_to_string("500.html", {"message": message}), status=500)
