"""Settings for production: every required value comes from the environment, or start-up fails."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, CELERY_RESULT_BACKEND, DATABASES, MAILERS, env
from .environment import env_bool, env_hosts, env_int

REQUIRED = (
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    # An SMTP URL (smtp+tls://user:password@host:587): the console backend would drop every e-mail.
    "EMAIL_URL",
)
_missing = [name for name in REQUIRED if not env.str(name, default="").strip()]
if _missing:
    raise ImproperlyConfigured(
        f"Production settings need these environment variables, which are unset or empty: {', '.join(_missing)}."
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL in production, not SQLite.")
# Base settings also accept the embedded stack's schemes; production runs on Redis or RabbitMQ and sends real e-mail.
if not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sentinel://", "amqp://", "amqps://")):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must be a redis://, rediss://, sentinel://, amqp:// or amqps:// URL in production, "
        f"not {CELERY_BROKER_URL.partition(':')[0]}://."
    )
# RabbitMQ keeps no results: with it, results need a Redis of their own, not a file in one pod's run directory.
if CELERY_RESULT_BACKEND.startswith("file://"):
    raise ImproperlyConfigured(
        f"CELERY_RESULT_BACKEND is {CELERY_RESULT_BACKEND!r} in production: with a RabbitMQ broker set it to a "
        "redis://, rediss:// or sentinel:// URL (results are read by other hosts than the one that wrote them)."
    )
if MAILERS["default"]["BACKEND"] != "django.core.mail.backends.smtp.EmailBackend":
    raise ImproperlyConfigured(
        "EMAIL_URL must be an smtp://, smtps://, smtp+tls:// or smtp+ssl:// URL in production: "
        "any other backend drops every e-mail."
    )

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith(("local-only", "test-only")):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a random value of at least 50 characters.")
# DJANGO_INTERNAL_HOSTS: names other services reach the web service by (KEDA asks <project>-web for queue counts).
ALLOWED_HOSTS = env_hosts("DJANGO_ALLOWED_HOSTS", default=[]) + env.list("DJANGO_INTERNAL_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[f"https://{h}" for h in ALLOWED_HOSTS])

# ------------------------------------------------------------------------------
# Security: HTTPS behind a proxy that sets X-Forwarded-Proto.
# https://docs.djangoproject.com/en/stable/howto/deployment/checklist/
# ------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Probes and the autoscaler speak plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^api/queues/owed$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default="/app/staticfiles")
