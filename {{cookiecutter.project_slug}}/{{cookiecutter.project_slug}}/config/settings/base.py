"""Settings shared by every environment: Django itself, then one module per integration."""

from __future__ import annotations

from . import environment
from .environment import RUN_DIR, env, env_bool, env_hosts, env_int, typed, url_with_scheme

# ------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------
BASE_DIR = environment.BASE_DIR
TIME_ZONE = environment.TIME_ZONE
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_hosts("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
USE_TZ = True
LANGUAGE_CODE = "en-us"
ROOT_URLCONF = "{{ cookiecutter.project_slug }}.config.urls"
WSGI_APPLICATION = "{{ cookiecutter.project_slug }}.config.wsgi.application"
ASGI_APPLICATION = "{{ cookiecutter.project_slug }}.config.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "{{ cookiecutter.project_slug }}.worker",
{%- if cookiecutter.demo_flows == "y" %}
    "{{ cookiecutter.project_slug }}.demo",
{%- endif %}
    "{{ cookiecutter.project_slug }}.idempotency",
    "{{ cookiecutter.project_slug }}.claimcheck",
    "{{ cookiecutter.project_slug }}.jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STATIC_URL = "static/"
STATIC_ROOT = RUN_DIR / "static"
# The ASGI app serves static files itself (asgi.py) unless a proxy or CDN does.
SERVE_STATIC = env_bool("DJANGO_SERVE_STATIC", default=True)

# ------------------------------------------------------------------------------
# Database: SQLite under RUN_DIR unless DATABASE_URL names another (PostgreSQL in production).
# ------------------------------------------------------------------------------
# An empty value counts as unset, so production settings can name it as missing.
DATABASES = {
    "default": typed(
        "DATABASE_URL",
        env.db_url_config(f"sqlite:///{RUN_DIR / 'db.sqlite3'}"),
        lambda raw: env.db_url_config(url_with_scheme(raw, ("postgres", "postgresql", "sqlite"))),
        "a postgres:// or postgresql:// URL (sqlite:// outside production)",
    )
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout rides out short locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # libpq waits for a server that does not answer without limit: a request, a claim, or the worker's liveness
    # thread (which forks of pool children wait for) would hang with it. A ?connect_timeout= in the URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", default=5, minimum=1)
    )

# ------------------------------------------------------------------------------
# E-mail: printed to the console unless an SMTP URL is given.
# ------------------------------------------------------------------------------
_email = typed(
    "EMAIL_URL",
    env.email_url_config("consolemail://"),
    lambda raw: env.email_url_config(url_with_scheme(raw, env.EMAIL_SCHEMES)),
    f"an e-mail URL with one of the schemes {', '.join(env.EMAIL_SCHEMES)} (smtp+tls://user:password@host:587)",
)
MAILERS = {
    "default": {
        "BACKEND": _email["EMAIL_BACKEND"],
        "OPTIONS": {
            key.removeprefix("EMAIL_").removeprefix("HOST_").lower(): value
            for key, value in _email.items()
            if key in ("EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS")
            and value not in ("", None)
        },
    }
}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="noreply@{{ cookiecutter.domain_name }}")

# ------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}


# ------------------------------------------------------------------------------
# Integrations, one module each: Celery and the worker pools, storage and the claim check, the jobs API.
# ------------------------------------------------------------------------------
from .celery import *  # noqa: E402, F403
from .celery import CELERY_BROKER_URL  # noqa: E402
from .jobs import *  # noqa: E402, F403
from .storages import *  # noqa: E402, F403

if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu.connection warns "No hostname was supplied. Reverting to default 'localhost'" each time it describes
    # a connection (18 times as the stack starts); the filesystem broker has no host, so that one message is noise.
    LOGGING["filters"] = {
        "broker_has_no_host": {
            "()": "{{ cookiecutter.project_slug }}.core.logfilters.DropMessages",
            "prefixes": ["No hostname was supplied."],
        },
    }
    LOGGING["loggers"] = {"kombu.connection": {"filters": ["broker_has_no_host"]}}
