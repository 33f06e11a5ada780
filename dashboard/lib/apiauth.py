"""Session or bearer-token authentication for JSON endpoints."""

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone


def api_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let in a logged-in session or `Authorization: Bearer <token>`; answer 401 JSON otherwise."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if request.user.is_authenticated and not header:
            return view(request, *args, **kwargs)
        if scheme.lower() == "bearer" and token:  # a token, when sent, decides who this is
            from environments.models import ApiToken

            found = (
                ApiToken.objects.select_related("user")
                .filter(
                    token_hash=ApiToken.digest(token.strip()),
                    user__is_active=True,
                    revoked_at=None,
                )
                .first()
            )
            if found is not None:
                ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
                request.user = found.user
                request.api_token = found
                return view(request, *args, **kwargs)
        return JsonResponse(
            {"error": "Authentication required: log in, or send 'Authorization: Bearer <token>'."},
            status=401,
        )

    return wrapper
