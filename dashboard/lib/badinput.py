"""Malformed requests get a 400 with a sentence, never a 500.

`RefuseNulBytes` turns away any request whose parameters hold a NUL character (PostgreSQL
refuses it in text, so it would surface as a database error); `bad_request` is the site's 400
page, saying what was wrong when the view raised `BadRequest` with a sentence of ours.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

_NUL = "The request holds a NUL character (%00), which no field accepts."


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def refuse(request: HttpRequest, message: str) -> HttpResponse:
    """A 400 that says `message`: JSON for the API, a page otherwise."""
    if wants_json(request):
        return JsonResponse({"error": message, "code": "bad_request"}, status=400)
    return render(request, "400.html", {"message": message}, status=400)


class RefuseNulBytes:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", "").lower():
            return refuse(request, _NUL)
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            for key, values in request.POST.lists():
                if "\x00" in key or any("\x00" in value for value in values):
                    return refuse(request, _NUL)
        return self.get_response(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: our own BadRequest carries a sentence for the user; anything else does not
    (Django's own messages may name internals)."""
    if isinstance(exception, BadRequest) and exception.args:
        return refuse(request, str(exception))
    return refuse(request, "The request could not be understood.")
