"""A person's API tokens: create (shown once), list, revoke."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from environments import tokens
from environments.models import ApiToken


@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """A person's own tokens: create one (shown once), revoke any. Creating redirects, so a
    reload shows the list again instead of creating a second token; the new token rides in the
    session to the next page view only."""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:100] or "token"
        _, request.session["issued_token"] = tokens.token_issue(
            user=request.user, name=name, actor=request.user
        )
        return redirect("tokens")
    if request.method != "GET":
        return HttpResponse(status=405)
    issued = request.session.pop("issued_token", None)
    mine = ApiToken.objects.filter(user=request.user)
    return render(request, "environments/tokens.html", {"tokens": mine, "issued": issued})


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    tokens.token_revoke(token=token, user=request.user)
    return redirect("tokens")
