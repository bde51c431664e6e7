"""The Flask application factory."""

from __future__ import annotations

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from arena import __version__
from arena.config import Settings, load_settings
from arena.db import session_factory


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    settings.ensure_dirs()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=settings.secret_key, ARENA=settings, MAX_CONTENT_LENGTH=settings.max_upload_bytes)
    make_session = session_factory(settings.database_url)

    @app.before_request
    def _open_session() -> None:
        g.db = make_session()

    @app.teardown_request
    def _close_session(exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            if exc is not None:
                db.rollback()
            db.close()

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=e.description or e.name), e.code
        return e

    @app.context_processor
    def _globals() -> dict:
        return {"arena_version": __version__}

    from arena.web.api import api
    from arena.web.pages import pages

    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(pages)
    return app
