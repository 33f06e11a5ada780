"""What every page's top bar shows."""

from django.http import HttpRequest

from dashboard.lib.live import fingerprint
from environments.models import Job


def navigation(request: HttpRequest) -> dict:
    """The number of jobs awaiting approval, and its fingerprint for the nav's poll."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    waiting = Job.objects.filter(status=Job.Status.AWAITING_APPROVAL).count()
    return {"awaiting_approval_count": waiting, "nav_key": fingerprint(waiting)}
