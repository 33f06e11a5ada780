#!/usr/bin/env python
"""Django's command-line utility for Retort."""

import gc
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # Start-up makes tens of thousands of objects that live as long as the process (modules,
    # classes, models) and frees almost none: the collector would walk them over and over for
    # nothing, a tenth of a short command's time (the CI gate's). Collection resumes after it.
    gc.disable()
    try:
        django.setup()
    except ImproperlyConfigured:
        pass  # settings that cannot be read: Django's command line below says why, its way
    finally:
        gc.freeze()  # what start-up made stays: later collections leave it alone
        gc.enable()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
