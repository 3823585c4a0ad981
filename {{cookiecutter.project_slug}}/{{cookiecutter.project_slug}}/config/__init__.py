"""Configuration: settings, URLs and the ASGI/WSGI entry points."""
