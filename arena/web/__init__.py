"""Flask app: HTML pages and the JSON API, thin layers over the core."""

from arena.web.app import create_app

__all__ = ["create_app"]
