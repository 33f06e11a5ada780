"""Live regions: the one mechanism by which a page keeps what it shows true without a reload.

A region of a page (the job's status and approvals, the approvals list, the nav count, a
drift check) carries a fingerprint of the state it shows, and htmx polls its URL with
`?since=<fingerprint>`. The view works out the fingerprint from a few cheap queries of stored
state (never a target database) and answers

- 204 No Content when nothing changed: htmx swaps nothing, and the poll costs no rendering;
- the region, rendered again with its new fingerprint, when something did;
- 286 once the state is final, which tells htmx to stop polling (the final region is rendered
  without a poll, so a page opened later does not poll at all).

A poll whose session has ended is sent to the login page as a whole page (`HX-Redirect`),
never with the login form swapped into the region (`login_required_live`).

Templates start a poll with `{% live_poll url fingerprint seconds %}` (see the retort tags).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect

STOP_POLLING = 286  # htmx: swap this answer, then poll no more


def fingerprint(*parts: object) -> str:
    """A short digest of what a region shows; equal parts, equal fingerprints."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def live_response(
    request: HttpRequest,
    key: str,
    render: Callable[[], HttpResponse],
    *,
    final: bool = False,
) -> HttpResponse:
    """Answer a poll: nothing when `key` is what the page already shows, else the region.
    A final answer always carries the region: htmx 2 swaps a 286's body, even an empty one."""
    if request.GET.get("since") == key and not final:
        return HttpResponse(status=204)
    response = render()
    if final and request.htmx:
        response.status_code = STOP_POLLING
    return response


def login_required_live(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`login_required` for views htmx polls: a poll from a session that has ended sends the
    browser to the login page, and back to the page it polled from afterwards."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            page = request.htmx.current_url_abs_path or "/"
            return HttpResponseClientRedirect(redirect_to_login(page).url)
        return redirect_to_login(request.get_full_path())

    return wrapper
