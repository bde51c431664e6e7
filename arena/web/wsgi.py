"""WSGI entry point for gunicorn: ``gunicorn arena.web.wsgi:app``."""

from arena.web import create_app

app = create_app()
