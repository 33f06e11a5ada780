"""Retort's Django project. `celery -A dashboard` finds the Celery app in dashboard/celery.py;
it is not imported here, so a command that sends no task (the CI gate) starts without Celery."""
