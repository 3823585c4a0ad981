"""Settings for the embedded local stack: SQLite, filesystem broker, local disk, console e-mail."""

from .base import *  # noqa: F403
from .base import env
from .environment import env_bool

DEBUG = env_bool("DJANGO_DEBUG", default=True)
# Local only: a fixed key is refused by production settings, never used there.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-only-insecure-key-do-not-deploy")
