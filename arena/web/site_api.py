"""The site worker API (/api/v1/site/): the HTTP edge of arena.site.server, nothing more.

Authentication: ``Authorization: Bearer <worker token>`` (``arena site token``); an unknown or revoked
token is 401, a phase outside its scope 403, an evaluation or image it may not see 404. Bodies are JSON
(arena.site.protocol); every refusal is ``{"error": "<what is wrong>"}``. CSRF-exempt like the API.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request, send_file
from pydantic import BaseModel, ValidationError

from arena.site import server
from arena.site.protocol import CaseReport, CasesRequest, ClaimRequest, FinishRequest, HEX64, LeaseRequest
from arena.web.api import _refuse_nul
from arena.web.auth import bearer_token

site_api = Blueprint("site_api", __name__)


def _error(message: str, status: int):
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


@site_api.errorhandler(server.SiteError)
def _site_error(e: server.SiteError):
    return _error(str(e), e.status)


site_api.before_request(_refuse_nul)  # the API's guard: a NUL in the URL is refused before any route


def _caller() -> server.Caller:
    if request.headers.get("Authorization") and not bearer_token():
        raise server.SiteError("malformed Authorization header: send 'Authorization: Bearer <worker token>'", 401)
    return server.authenticate(current_app.config["ARENA"], bearer_token())


def _body(model: type[BaseModel]):
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise server.SiteError("send a JSON object as the body (Content-Type: application/json)", 400)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())
        raise server.SiteError(f"bad body: {problems}", 400) from None


@site_api.post("/cases")
def register_cases():
    caller = _caller()
    res = server.register_cases(current_app.config["ARENA"], caller, _body(CasesRequest))
    return jsonify(res.model_dump())


@site_api.post("/claim")
def claim():
    caller = _caller()
    req = _body(ClaimRequest)
    res = server.claim(current_app.config["ARENA"], caller, req.worker)
    if res is None:
        return "", 204
    return jsonify(res.model_dump())


@site_api.post("/evaluations/<int:evaluation_id>/heartbeat")
def heartbeat(evaluation_id: int):
    caller = _caller()
    server.heartbeat(current_app.config["ARENA"], caller, evaluation_id, _body(LeaseRequest).lease)
    return jsonify(ok=True)


@site_api.get("/images/<sha256>")
def image(sha256: str):
    caller = _caller()
    if not re.fullmatch(HEX64, sha256):
        raise server.SiteError("an image is named by the sha256 of its tarball: 64 lowercase hex digits", 404)
    path = server.image_file(current_app.config["ARENA"], caller, sha256)
    return send_file(path, mimetype="application/octet-stream", conditional=True, etag=sha256, max_age=0)


@site_api.get("/models/<sha256>")
def model(sha256: str):
    caller = _caller()
    if not re.fullmatch(HEX64, sha256):
        raise server.SiteError("a model archive is named by its sha256: 64 lowercase hex digits", 404)
    path = server.model_file(current_app.config["ARENA"], caller, sha256)
    return send_file(path, mimetype="application/octet-stream", conditional=True, etag=sha256, max_age=0)


@site_api.post("/evaluations/<int:evaluation_id>/cases/<key>")
def record_case(evaluation_id: int, key: str):
    caller = _caller()
    server.record_case(current_app.config["ARENA"], caller, evaluation_id, key, _body(CaseReport))
    return jsonify(recorded=True), 201


@site_api.post("/evaluations/<int:evaluation_id>/finish")
def finish(evaluation_id: int):
    caller = _caller()
    status = server.finish(current_app.config["ARENA"], caller, evaluation_id, _body(FinishRequest))
    return jsonify(status=status)
