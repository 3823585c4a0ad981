"""The environment (``.env`` included) and the values every settings module derives from."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[3]
env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)


def typed[T](name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
    """Return ``name`` parsed by ``parse`` (``default`` when unset or empty); refuse a bad value by its name."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except (ValueError, KeyError, ImproperlyConfigured) as exc:
        # The value is shown with any password masked: start-up errors end up in logs.
        shown = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", raw)
        raise ImproperlyConfigured(f"{name} must be {expected}, not {shown!r}.") from exc


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """Return the whole number ``name`` of at least ``minimum``, or ``default``."""

    def parse(raw: str) -> int:
        if (value := int(raw)) < minimum:
            raise ValueError(raw)
        return value

    return typed(name, default, parse, f"a whole number of at least {minimum}")


def env_float(name: str, default: float) -> float:
    """Return the positive number ``name`` (seconds, usually), or ``default``."""

    def parse(raw: str) -> float:
        if not math.isfinite(value := float(raw)) or value <= 0:
            raise ValueError(raw)
        return value

    return typed(name, default, parse, "a number above 0")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def env_bool(name: str, default: bool) -> bool:
    """Return the boolean ``name`` (true/false, yes/no, on/off, 1/0), or ``default``."""

    def parse(raw: str) -> bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(raw)
        return raw.lower() in _TRUE

    return typed(name, default, parse, "one of true/false, yes/no, on/off, 1/0")


def url_with_scheme(raw: str, schemes: Collection[str]) -> str:
    """Return ``raw`` if it is a URL with one of ``schemes``; raise ValueError otherwise."""
    scheme, sep, _ = raw.partition("://")
    if not sep or scheme.lower() not in schemes:
        raise ValueError(raw)
    return raw


def env_url(name: str, default: str, schemes: Collection[str], expected: str) -> str:
    """Return the URL ``name`` if its scheme is one of ``schemes`` (``expected`` says which), or ``default``."""
    return typed(name, default, lambda raw: url_with_scheme(raw, schemes), expected)


def env_hosts(name: str, default: list[str]) -> list[str]:
    """Return the comma-separated host names ``name``, at least one, without schemes, paths or spaces."""

    def parse(raw: str) -> list[str]:
        hosts = [host.strip() for host in raw.split(",") if host.strip()]
        if not hosts or any(re.search(r"[\s/]", host) for host in hosts):
            raise ValueError(raw)
        return hosts

    return typed(name, default, parse, "a comma-separated list of host names (app.example.com, .example.com)")


# Everything the embedded stack writes lives under RUN_DIR; {{ cookiecutter.project_slug }}.core.rundirs creates its folders
# when a process starts, never at import.
RUN_DIR = Path(env.str("RUN_DIR", default=str(BASE_DIR / "run")))
TIME_ZONE = "{{ cookiecutter.timezone }}"
