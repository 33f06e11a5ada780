"""What every page's top bar shows."""

from django.http import HttpRequest

from environments.models import Job


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    waiting = Job.objects.filter(status=Job.Status.AWAITING_APPROVAL).count()
    return {"awaiting_approval_count": waiting}
