"""The Flask application factory: one blueprint per area (account, pages, manage, api)."""

from __future__ import annotations

import os
import secrets

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from arena import __version__
from arena.config import Settings, load_settings
from arena.db import session_factory

# Scripts only from Arena's own files (arena/web/static/*.js): no inline script, no on* handler, no
# javascript: URL runs, whatever a team name or label contains. Inline style attributes stay allowed
# (board cell colours, matplotlib's SVG <style>); they cannot run code.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")

# Upload URLs take the archive as the raw body; these form encodings of it are refused with a clear answer.
# The browser URL also refuses urlencoded bodies (its CSRF check would read them as a form); the API takes
# them, since curl --data-binary sends that type by default and nothing there parses the body.
FORM_BODIES = {"pages.upload": ("multipart/form-data", "application/x-www-form-urlencoded"),
               "api.submit": ("multipart/form-data",)}


def _secret_key(settings: Settings) -> str:
    """ARENA_SECRET_KEY, else one kept in ARENA_HOME/.secret_key (so gunicorn workers and restarts share
    sessions)."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.home / ".secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
    except OSError:  # a read-only home: this process's own key (sessions end with it)
        return secrets.token_hex(32)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    settings.ensure_dirs()
    app = Flask(__name__)
    try:
        key = _secret_key(settings)
    except FileExistsError:  # another worker wrote it just now
        key = (settings.home / ".secret_key").read_text().strip()
    app.config.update(SECRET_KEY=key, ARENA=settings, MAX_CONTENT_LENGTH=settings.max_upload_bytes,
                      MAX_FORM_MEMORY_SIZE=2 * 2**20)
    if settings.proxy_hops:  # behind ARENA_PROXY_HOPS trusted proxies: their X-Forwarded-For/-Proto count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
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

    @app.before_request
    def _refuse_form_uploads():
        """An upload is the image archive itself as the request body. A form sent to an upload URL is
        answered here, before the CSRF check reads the form (and with it the body), saying what to send."""
        refused = FORM_BODIES.get(request.endpoint, ())
        if request.mimetype in refused:
            return jsonify(error=f"the upload was sent as a form ({request.mimetype}); send the image archive "
                                 "itself as the request body (Content-Type: application/octet-stream), as the "
                                 "Submit page's Upload button does; from a terminal: arena submit, or curl "
                                 "--data-binary @image.tar.gz (not -F/--form)"), 415
        return None

    from arena.web.auth import init_auth

    init_auth(app)

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        # pages, API answers, exports: never kept by browsers or proxies; but the board answers every visitor
        # without an account gets alike, which ask to be revalidated instead (arena/web/board_cache.py)
        if request.endpoint != "static" and not getattr(resp, "revalidate", False):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        # the exception's own headers (Allow of a 405, WWW-Authenticate, Retry-After) stay on the answer
        headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
        if request.path.startswith("/api/"):
            return jsonify(error=e.description or e.name), e.code, headers
        from flask import render_template

        try:
            return render_template("error.html", error=e), e.code, headers
        except Exception:
            return e

    @app.context_processor
    def _globals() -> dict:
        from arena.web.auth import me, user_tasks_organized

        user = me()
        organizes = bool(user is not None and (user.is_admin or user_tasks_organized(user)))
        return {"arena_version": __version__, "me": user, "me_organizes": organizes}

    from arena.web.account import account
    from arena.web.api import api
    from arena.web.auth import csrf
    from arena.web.entries import entries
    from arena.web.manage import manage
    from arena.web.pages import pages
    from arena.web.site_api import site_api
    from arena.web.viewer import viewer

    csrf.exempt(api)
    csrf.exempt(site_api)
    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(site_api, url_prefix="/api/v1/site")  # site workers (arena.site), worker tokens
    app.register_blueprint(pages)
    app.register_blueprint(account)
    app.register_blueprint(manage, url_prefix="/manage")
    app.register_blueprint(viewer)
    app.register_blueprint(entries)
    return app
