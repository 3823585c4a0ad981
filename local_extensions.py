"""Jinja extension for the hooks: where this template is on disk, whatever directory cookiecutter runs from.

cookiecutter renders each hook into a temporary file and runs it from the new project's directory, and
``cookiecutter._repo_dir`` is the template path as the user typed it (``.`` for ``cookiecutter .``), so a
hook cannot find the template's files by itself. cookiecutter imports this module from the template's
root (``_extensions`` in cookiecutter.json; the root is on ``sys.path``) while rendering, so ``__file__``
locates it.
"""

from pathlib import Path

from jinja2.ext import Extension

TEMPLATE_DIR = Path(__file__).resolve().parent


class TemplateDirExtension(Extension):
    """Give templates ``template_lock``: the absolute path of the project template's uv.lock."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["template_lock"] = str(TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "uv.lock")
