"""The {{ cookiecutter.project_name }} project package; importing it loads the Celery app."""

from .worker.app import app as celery_app

__all__ = ("celery_app",)
