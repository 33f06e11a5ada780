"""Retort's settings: environment variables with safe local defaults.

SQLite and an embedded SQLite broker by default, so a fresh checkout runs with no servers;
DATABASE_URL and CELERY_BROKER_URL switch to PostgreSQL and Redis.
"""

import logging.config
from pathlib import Path

from dashboard.lib.env import database_from_url, env_bool, env_float, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("RETORT_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "retort-local-development-key-change-me-in-production")
# Key for database URLs stored at rest; falls back to one derived from SECRET_KEY.
RETORT_ENCRYPTION_KEY = env_str("RETORT_ENCRYPTION_KEY", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "dashboard.apps.RetortAdminConfig",  # the admin, registered with the URLs (apps.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials.apps.SimpleAppConfig",  # the loaders are set below, not by the app
    "environments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.lib.badinput.RefuseNulBytes",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "environments.audit.AuditRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            # a page and its parts in one file: "environments/job_detail.html#live" renders
            # the part of the job page that polls (django-template-partials)
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                "django.template.loaders.filesystem.Loader",
                                "django.template.loaders.app_directories.Loader",
                            ],
                        )
                    ],
                )
            ],
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "environments.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'retort.sqlite3'}"),
        # keep connections only where one process serves one request at a time: gunicorn's
        # sync workers (docker-compose.yml sets 60); 0 for runserver's thread per request
        conn_max_age=env_float("RETORT_DB_CONN_MAX_AGE", 0.0),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"  # collectstatic target; WhiteNoise also finds files in place
STATIC_ROOT.mkdir(exist_ok=True)
# WhiteNoise serves static files from the app server (runserver and gunicorn alike); without a
# collectstatic run it finds them where they are.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Reading target databases
RETORT_CONNECT_TIMEOUT = env_float("RETORT_CONNECT_TIMEOUT", 3.0)
RETORT_READ_WORKERS = int(env_float("RETORT_READ_WORKERS", 16))
# Workers read each environment at most every RETORT_REFRESH_SECONDS (and at once when someone
# presses Refresh); every RETORT_REFRESH_TICK_SECONDS Celery beat sends the reads that are due,
# RETORT_READ_BATCH environments to a task, so the reads spread over every worker.
RETORT_REFRESH_SECONDS = env_float("RETORT_REFRESH_SECONDS", 60.0)
RETORT_REFRESH_TICK_SECONDS = env_float("RETORT_REFRESH_TICK_SECONDS", 10.0)
RETORT_READ_BATCH = int(env_float("RETORT_READ_BATCH", 50))
# A revision file (or a module a header names) larger than this has only its header read.
RETORT_MAX_REVISION_BYTES = int(env_float("RETORT_MAX_REVISION_BYTES", 1_000_000))

# Jobs
RETORT_BACKUP_ROOT = Path(env_str("RETORT_BACKUP_ROOT", str(DATA_DIR / "backups")))
RETORT_JOB_TIMEOUT = env_float("RETORT_JOB_TIMEOUT", 3600.0)  # seconds, per alembic/pg_dump run
# Pages that follow a changing state re-render at most this often merely because time passed
# ("3 minutes ago", a promotion rule's waiting time); a change re-renders them at once.
RETORT_LIVE_REFRESH_SECONDS = env_float("RETORT_LIVE_REFRESH_SECONDS", 60.0)
RETORT_HEARTBEAT_SECONDS = env_float("RETORT_HEARTBEAT_SECONDS", 5.0)
# A running job whose worker has not beaten for this long is interrupted by the reaper.
RETORT_HEARTBEAT_TIMEOUT = env_float("RETORT_HEARTBEAT_TIMEOUT", 60.0)
RETORT_REAPER_SECONDS = env_float("RETORT_REAPER_SECONDS", 30.0)
# A queued job no worker has taken is sent to the broker again after this long (a message lost
# with a broker restart); the dispatcher looks every RETORT_DISPATCH_SECONDS.
RETORT_REDISPATCH_SECONDS = env_float("RETORT_REDISPATCH_SECONDS", 60.0)
RETORT_DISPATCH_SECONDS = env_float("RETORT_DISPATCH_SECONDS", 15.0)

# Approvals and notifications. A job's links in webhook messages start with RETORT_BASE_URL.
RETORT_BASE_URL = env_str("RETORT_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
RETORT_EXPIRE_SECONDS = env_float("RETORT_EXPIRE_SECONDS", 60.0)  # how often requests expire
RETORT_WEBHOOK_URL = env_str("RETORT_WEBHOOK_URL", "")  # a project's own webhook overrides it
RETORT_WEBHOOK_TIMEOUT = env_float("RETORT_WEBHOOK_TIMEOUT", 5.0)  # seconds per attempt
RETORT_WEBHOOK_ATTEMPTS = int(env_float("RETORT_WEBHOOK_ATTEMPTS", 5))
RETORT_WEBHOOK_BACKOFF = env_float("RETORT_WEBHOOK_BACKOFF", 5.0)  # seconds, doubled per retry
# The only hosts webhooks may go to (comma-separated); empty: any host.
RETORT_WEBHOOK_HOSTS = [
    host.strip().lower() for host in env_str("RETORT_WEBHOOK_HOSTS", "").split(",") if host.strip()
]

# Drift: where scratch PostgreSQL databases for expected schemas are made (default: on each
# environment's own server, whose login then needs CREATEDB).
RETORT_SCRATCH_POSTGRES_URL = env_str("RETORT_SCRATCH_POSTGRES_URL", "")

# Logins: this many failures for one user name (ten times as many from one address) within the
# window lock it out until the window has passed.
RETORT_LOGIN_ATTEMPTS = int(env_float("RETORT_LOGIN_ATTEMPTS", 5))
RETORT_LOGIN_WINDOW = env_float("RETORT_LOGIN_WINDOW", 900.0)

# Audit: the key of the chain's HMAC (kept out of the database, so nobody with only database
# access can write a chain that verifies); default: derived from SECRET_KEY. Keep it stable.
RETORT_AUDIT_KEY = env_str("RETORT_AUDIT_KEY", "")
# Where each full verification writes the verified head (seq and hash), outside the database,
# so a trail wiped or shortened in the database is caught by the next verification.
RETORT_AUDIT_HEAD_FILE = Path(env_str("RETORT_AUDIT_HEAD_FILE", str(DATA_DIR / "audit-head.json")))

# Audit: take the client IP from X-Forwarded-For (only behind a proxy that sets it).
RETORT_TRUST_X_FORWARDED_FOR = env_bool("RETORT_TRUST_X_FORWARDED_FOR", False)
RETORT_AUDIT_PAGE_SIZE = 50

# alembic forked from a warm parent that has alembic and SQLAlchemy imported (the project's
# command must be this interpreter's `-m alembic`); off: a new interpreter for every run.
RETORT_WARM_ALEMBIC = env_bool("RETORT_WARM_ALEMBIC", True)
# After a successful upgrade or downgrade, compare the live schema with the one its revisions
# build (environments/proofs.py), in a task of its own.
RETORT_PROOF_AFTER_RUN = env_bool("RETORT_PROOF_AFTER_RUN", True)

# Celery: Redis in production and CI, an embedded SQLite broker otherwise.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'broker.sqlite3'}")
CELERY_TASK_DEFAULT_QUEUE = env_str("RETORT_CELERY_QUEUE", "retort")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = False  # a migration must never be redelivered to a second worker
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "refresh-environments": {  # sends the reads that are due, in batches
        "task": "environments.tasks.environments_refresh_due",
        "schedule": RETORT_REFRESH_TICK_SECONDS,
    },
    "dispatch-queued-jobs": {
        "task": "environments.tasks.jobs_dispatch",
        "schedule": RETORT_DISPATCH_SECONDS,
    },
    "reap-stopped-jobs": {
        "task": "environments.tasks.jobs_reap",
        "schedule": RETORT_REAPER_SECONDS,
    },
    "expire-approval-requests": {
        "task": "environments.tasks.jobs_expire",
        "schedule": RETORT_EXPIRE_SECONDS,
    },
    "send-notifications": {
        "task": "environments.tasks.notifications_send",
        "schedule": 30.0,
    },
    "advance-rollouts": {  # the coordinator's safety net: a lost nudge, a killed worker
        "task": "environments.tasks.rollouts_advance",
        "schedule": env_float("RETORT_ROLLOUT_TICK_SECONDS", 10.0),
    },
    "discover-tenants": {
        "task": "environments.tasks.discoveries_run",
        "schedule": env_float("RETORT_DISCOVERY_SECONDS", 300.0),
    },
    "check-drift": {
        "task": "environments.tasks.drift_check_all",
        "schedule": env_float("RETORT_DRIFT_SECONDS", 3600.0),
    },
    "verify-audit-chain": {
        "task": "environments.tasks.audit_verify",
        "schedule": env_float("RETORT_AUDIT_VERIFY_SECONDS", 86400.0),
    },
}

# Applied here rather than by Django (LOGGING_CONFIG = None): Django's defaults would load its
# error-mail handler, and with it the debug views and templates, in every process, the CI gate
# included; nothing here mails anyone.
LOGGING_CONFIG = None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "alembic": {"level": "WARNING"}},
}
logging.config.dictConfig(LOGGING)
