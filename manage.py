#!/usr/bin/env python
"""Django's command-line utility for Retort."""

import gc
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # Start-up makes tens of thousands of objects that live as long as the process (modules,
    # classes, models) and frees almost none: the collector would walk them over and over for
    # nothing, a tenth of a short command's time (the CI gate's). So Django starts here with
    # the collector paused, and what it made is frozen out of later collections. Not for
    # runserver, whose reloader starts Django itself (and keeps serving code that fails to
    # load), nor when the settings cannot be read: Django's command line says why, its way.
    try:
        settings.INSTALLED_APPS  # noqa: B018 - reads the settings
        early = sys.argv[1:2] != ["runserver"]
    except ImproperlyConfigured:
        early = False
    if early:
        gc.disable()
        try:
            django.setup()
        finally:
            gc.freeze()
            gc.enable()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
