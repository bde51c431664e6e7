"""The OpenAPI 3 document of /api/v1 (served at /api/v1/openapi.json; tests/test_api.py checks it
against the routes and runs schemathesis against the app)."""

from __future__ import annotations

from typing import Any

from arena.disclosure import OUTCOMES
from arena.lifecycle import EvaluationStatus
from arena.tasks.spec import SLUG
from arena.web.uploads import FILENAME_MAX, LABEL_MAX, PLAIN_TEXT, TOKEN_NAME_MAX


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(desc: str, schema: dict, code: str = "200") -> dict:
    return {code: {"description": desc, "content": {"application/json": {"schema": schema}}}}


REF = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
PAGE = [{"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10**6}},
        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]
SEC = [{"bearer": []}]
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}


def _page_of(item: dict) -> dict:
    return {"type": "object", "required": ["items", "page", "per_page", "total", "next"],
            "properties": {"items": {"type": "array", "items": item}, "page": {"type": "integer"},
                           "per_page": {"type": "integer"}, "total": {"type": "integer"}, "next": NULLABLE_STR}}


def _path_int(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 2147483647}}


def _path_str(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": SLUG}}


def _text(max_len: int, min_len: int = 0) -> dict:
    """Free text as the API accepts it (arena.web.api.text_problem)."""
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": PLAIN_TEXT}


def document(server: str = "/api/v1") -> dict[str, Any]:
    e401, e403, e404 = _err("no or bad token"), _err("not allowed"), _err("not found (or not yours)")
    e400, e409 = _err("bad request: the message says what to fix"), _err("conflict")
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Me": {"type": "object", "required": ["id", "name", "is_admin", "team", "organizes"], "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "is_admin": {"type": "boolean"},
            "team": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"id": {"type": "integer"},
                                                                                   "name": {"type": "string"}}}]},
            "organizes": {"type": "array", "items": {"type": "string"}}}},
        "TaskSummary": {"type": "object", "required": ["slug", "title", "kind", "phases", "cases"], "properties": {
            "slug": {"type": "string"}, "title": {"type": "string"}, "kind": {"type": "string"},
            "phases": {"type": "array", "items": {"type": "string"}}, "cases": {"type": "integer"}}},
        "Task": {"type": "object", "required": ["slug", "title", "spec", "phases"], "properties": {
            "slug": {"type": "string"}, "title": {"type": "string"}, "kind": {"type": "string"},
            "spec": {"type": "object"}, "phases": {"type": "array", "items": {"type": "object", "required": [
                "slug", "cases", "submission_limit", "accepting", "visibility"], "properties": {
                "slug": {"type": "string"}, "title": {"type": "string"}, "cases": {"type": "integer"},
                "submission_limit": {"type": "integer"}, "opens_at": NULLABLE_STR, "closes_at": NULLABLE_STR,
                "visibility": {"type": "string", "enum": ["public", "hidden", "private"]},
                "accepting": {"type": "boolean"}, "board_public": {"type": "boolean"},
                "quota_left": {"type": "integer"}}}},
            "training_data": {"type": ["object", "null"], "description": "the task's published training cases "
                              "(GET /tasks/{slug}/training-data), or null", "properties": {
                "cases": {"type": "integer"}, "bytes": {"type": "integer"}, "url": {"type": "string"},
                "attribution": {"type": "array", "items": {"type": "string"}}}}}},
        "Case": {"type": "object", "properties": {
            "case": {"type": "string"}, "status": {"type": "string"}, "failure": NULLABLE_STR, "error": NULLABLE_STR,
            "runtime_s": NULLABLE_NUM, "exit_code": NULLABLE_INT, "cpu_s": NULLABLE_NUM, "peak_memory_mb": NULLABLE_NUM,
            "pids_peak": NULLABLE_INT, "gpu_memory_peak_mb": NULLABLE_NUM, "gpu_utilization_mean": NULLABLE_NUM,
            "scores": {"type": "object"}, "log_tail": NULLABLE_STR}},
        "Evaluation": {"type": "object", "required": ["id", "status", "cases_done", "cases_total"], "properties": {
            "id": {"type": "integer"}, "status": {"type": "string", "enum": [
                "queued", "running", "scoring", "succeeded", "failed", "cancelled"]},
            "error": NULLABLE_STR, "cases_done": {"type": "integer"}, "cases_total": {"type": "integer"},
            "created_at": {"type": "string"}, "started_at": NULLABLE_STR, "finished_at": NULLABLE_STR,
            "progress": {"type": "string"}, "cases": {"type": "array", "items": REF("Case")},
            # a phase that hides its cases (arena.disclosure): outcome, cases per outcome, coarse total runtime
            "outcome": {"type": "string", "enum": [*OUTCOMES, *(st.value for st in EvaluationStatus)]},
            "duration_s": NULLABLE_NUM,
            "diagnosis": {"type": "array", "items": {"type": "object", "required": ["outcome", "cases"], "properties": {
                "outcome": {"type": "string", "enum": list(OUTCOMES)}, "cases": {"type": "integer"}}}}}},
        "Submission": {"type": "object", "required": ["id", "task", "phase", "team", "status", "evaluations"],
                       "properties": {
            "id": {"type": "integer"}, "task": {"type": "string"}, "phase": {"type": "string"},
            "team": {"type": "string"}, "label": NULLABLE_STR, "status": {"type": "string"},
            "intake_status": {"type": "string"}, "error": NULLABLE_STR, "image_id": NULLABLE_STR,
            "upload_sha256": NULLABLE_STR, "upload_bytes": NULLABLE_INT, "created_at": {"type": "string"},
            "model": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["sha256", "bytes", "files"],
                                                   "properties": {"sha256": {"type": "string"},
                                                                  "bytes": {"type": "integer"},
                                                                  "files": {"type": "integer"}}}]},
            "scores_hidden": {"type": "boolean"}, "url": {"type": "string"},
            "standing": {"type": "object", "description": "score and rank on the board as the viewer may see them "
                         "(the submission page's top card); null fields are not shown, note says why",
                         "required": ["metric", "score", "penalties", "rank", "ranked", "note"], "properties": {
                "metric": {"type": "string"}, "score": NULLABLE_NUM, "penalties": {"type": "integer"},
                "rank": NULLABLE_INT, "ranked": {"type": "integer"}, "note": {"type": "string"}}},
            "evaluations": {"type": "array", "items": REF("Evaluation")}}},
        "SubmissionSummary": {"type": "object", "required": ["id", "task", "phase", "team", "status"], "properties": {
            "id": {"type": "integer"}, "task": {"type": "string"}, "phase": {"type": "string"},
            "team": {"type": "string"}, "label": NULLABLE_STR, "status": {"type": "string"},
            "created_at": {"type": "string"}}},
        "QueueEntry": {"type": "object", "required": ["id", "submission_id", "status", "cases_done", "cases_total"],
                       "properties": {
            "id": {"type": "integer"}, "submission_id": {"type": "integer"}, "task": {"type": "string"},
            "phase": {"type": "string"}, "team": {"type": "string"}, "status": {"type": "string"},
            "cases_done": {"type": "integer"}, "cases_total": {"type": "integer"}, "worker": NULLABLE_STR,
            "created_at": {"type": "string"}, "age_s": {"type": "number"}}},
        "Token": {"type": "object", "required": ["id", "name"], "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "created_at": {"type": "string"},
            "last_used_at": NULLABLE_STR, "revoked_at": NULLABLE_STR}},
        "Board": {"type": "object", "required": ["task", "phase", "rows"], "properties": {
            "task": {"type": "string"}, "phase": {"type": "string"}, "primary": {"type": "string"},
            "frozen_at": {"type": "string"}, "rows": {"type": "array", "items": {"type": "object"}}}},
    }
    sub_id, ev_id = _path_int("submission_id"), _path_int("evaluation_id")
    paths = {
        "/me": {"get": {"operationId": "getMe", "summary": "Who the token belongs to", "security": SEC,
                        "responses": {**_ok("the user", REF("Me")), "401": e401}}},
        "/tasks": {"get": {"operationId": "listTasks", "summary": "Tasks (paginated)", "parameters": PAGE,
                           "responses": {**_ok("a page of tasks", _page_of(REF("TaskSummary"))), "400": e400}}},
        "/tasks/{slug}": {"get": {"operationId": "getTask", "summary": "A task, its spec and phases (with your quota)",
                                  "parameters": [_path_str("slug")],
                                  "responses": {**_ok("the task", REF("Task")), "404": e404}}},
        "/tasks/{slug}/training-data": {"get": {
            "operationId": "getTrainingData", "summary": "The task's training data: an uncompressed tar (images/, "
            "labels/, labels.json, cases.json, SHA256SUMS) streamed with its Content-Length", "security": SEC,
            "parameters": [_path_str("slug")],
            "responses": {"200": {"description": "the archive", "content": {"application/x-tar": {
                "schema": {"type": "string", "format": "binary"}}}},
                "401": e401, "404": e404, "409": _err("the data changed since the task was loaded")}}},
        "/tasks/{slug}/leaderboard": {"get": {
            "operationId": "getLeaderboard", "summary": "A phase's board (hidden boards: organizers only). Without "
            "a token or session the answer is shared: it carries an ETag and Cache-Control: no-cache, comes gzipped "
            "on Accept-Encoding: gzip, and If-None-Match with a current tag gets 304 with no body",
            "parameters": [_path_str("slug"), {"name": "phase", "in": "query", "schema": {"type": "string"}}],
            "responses": {**_ok("the board", REF("Board")),
                          "304": {"description": "not modified: the If-None-Match tag is still the board's"},
                          "404": e404}}},
        "/tasks/{slug}/phases/{phase}/submissions": {"post": {
            "operationId": "submit", "summary": "Upload a docker-save tarball as the raw body (streamed to disk)",
            "security": SEC, "parameters": [_path_str("slug"), _path_str("phase"),
                                            {"name": "label", "in": "query", "schema": _text(LABEL_MAX)},
                                            {"name": "filename", "in": "query", "schema": _text(FILENAME_MAX)},
                                            {"name": "model", "in": "query", "description": "sha256 of a model "
                                             "archive your team uploaded (POST /models): extracted read-only at "
                                             "/opt/ml/model", "schema": {"type": "string", "maxLength": 71}}],
            "requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {**_ok("accepted: intake and evaluation follow on the workers", REF("Submission"), "202"),
                          "400": e400, "401": e401, "403": e403, "404": e404, "409": e409,
                          "413": _err("larger than the upload limit"), "429": _err("over the quota or rate limit"),
                          "503": _err("stored, but the queue is unreachable")}}},
        "/models": {"post": {
            "operationId": "uploadModel", "summary": "Upload a model archive (tar or tar.gz of regular files and "
            "directories) as the raw body; submissions name it with ?model=<sha256>",
            "security": SEC,
            "requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {**_ok("stored (or already stored: the same content)", {
                "type": "object", "required": ["sha256", "bytes", "unpacked_bytes", "files"], "properties": {
                    "sha256": {"type": "string"}, "bytes": {"type": "integer"}, "unpacked_bytes": {"type": "integer"},
                    "files": {"type": "integer"}}}, "201"),
                "400": e400, "401": e401, "403": e403, "413": _err("larger than the upload limit")}}},
        "/submissions": {"get": {
            "operationId": "listSubmissions", "summary": "Your team's submissions (organizers: their tasks' too)",
            "security": SEC, "parameters": [*PAGE, {"name": "task", "in": "query", "schema": {"type": "string",
                                                                                              "pattern": SLUG}}],
            "responses": {**_ok("a page of submissions", _page_of(REF("SubmissionSummary"))), "400": e400,
                          "401": e401, "404": e404}}},
        "/submissions/{submission_id}": {"get": {
            "operationId": "getSubmission", "summary": "Status, evaluations and per-case results (as the phase allows)",
            "security": SEC, "parameters": [sub_id],
            "responses": {**_ok("the submission", REF("Submission")), "401": e401, "404": e404}}},
        "/submissions/{submission_id}/results": {"get": {
            "operationId": "getResults", "summary": "Per case and label: metrics and run statistics",
            "security": SEC, "parameters": [sub_id, {"name": "format", "in": "query",
                                                     "schema": {"type": "string", "enum": ["json", "csv"]}}],
            "responses": {"200": {"description": "rows", "content": {
                "application/json": {"schema": {"type": "object", "required": ["submission_id", "rows"], "properties": {
                    "submission_id": {"type": "integer"}, "rows": {"type": "array", "items": {"type": "object"}},
                    "hidden": {"type": "boolean"}}}},
                "text/csv": {"schema": {"type": "string"}}}}, "400": e400, "401": e401, "404": e404}}},
        "/submissions/{submission_id}/evaluations": {"post": {
            "operationId": "rerun", "summary": "Organizers: a new evaluation (earlier results kept)",
            "security": SEC, "parameters": [sub_id],
            "responses": {**_ok("queued", {"type": "object", "required": ["evaluation_id", "submission_id"],
                                           "properties": {"evaluation_id": {"type": "integer"},
                                                          "submission_id": {"type": "integer"}}}, "202"),
                          "401": e401, "403": e403, "404": e404, "409": e409, "503": _err("queue unreachable")}}},
        "/evaluations": {"get": {
            "operationId": "listEvaluations", "summary": "Organizers: the queue, newest first",
            "security": SEC, "parameters": [*PAGE, {"name": "status", "in": "query", "schema": {
                "type": "string", "enum": [st.value for st in EvaluationStatus]}}],
            "responses": {**_ok("a page of evaluations", _page_of(REF("QueueEntry"))), "400": e400, "401": e401,
                          "403": e403}}},
        "/evaluations/{evaluation_id}/cancel": {"post": {
            "operationId": "cancelEvaluation", "summary": "Organizers: cancel a queued or running evaluation",
            "security": SEC, "parameters": [ev_id],
            "responses": {**_ok("cancelled", {"type": "object", "required": ["evaluation_id", "status"]}),
                          "401": e401, "403": e403, "404": e404, "409": e409}}},
        "/tokens": {
            "get": {"operationId": "listTokens", "summary": "Your API tokens (never the secrets)", "security": SEC,
                    "responses": {**_ok("tokens", {"type": "object", "required": ["items"], "properties": {
                        "items": {"type": "array", "items": REF("Token")}}}), "401": e401}},
            "post": {"operationId": "createToken", "summary": "A new token, shown once", "security": SEC,
                     "requestBody": {"required": False, "content": {"application/json": {"schema": {
                         "type": "object", "properties": {"name": _text(TOKEN_NAME_MAX, 1)}}}}},
                     "responses": {**_ok("the token", {"type": "object", "required": ["id", "name", "token"],
                                                       "properties": {"id": {"type": "integer"},
                                                                      "name": {"type": "string"},
                                                                      "token": {"type": "string"}}}, "201"),
                                   "400": e400, "401": e401}}},
        "/tokens/{token_id}": {"delete": {
            "operationId": "revokeToken", "summary": "Revoke one of your tokens", "security": SEC,
            "parameters": [_path_int("token_id")],
            "responses": {**_ok("revoked", {"type": "object", "required": ["id", "revoked_at"]}), "401": e401,
                          "404": e404}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                  "responses": _ok("OpenAPI 3.1", {"type": "object"})}},
    }
    _add_site_paths(paths, schemas, e400, e401, e403, e404, e409)
    for ops in paths.values():  # a NUL in the URL is refused before any route (arena.web.api._refuse_nul)
        for op in ops.values():
            op["responses"].setdefault("400", e400)
    return {"openapi": "3.1.0",
            "info": {"title": "Arena API", "version": "1",
                     "description": "Medical image AI challenges: tasks, submissions, evaluations, leaderboards. "
                                    "Authenticate with `Authorization: Bearer <token>` (account page or "
                                    "`arena user add`). Errors are `{\"error\": \"...\"}`."},
            "servers": [{"url": server}], "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "siteWorker": {"type": "http", "scheme": "bearer",
                               "description": "a site worker's token (arena site token), not a personal one"}}}}


def _add_site_paths(paths: dict, schemas: dict, e400: dict, e401: dict, e403: dict, e404: dict, e409: dict) -> None:
    """The site worker API (/site/..., arena.web.site_api): its bodies are arena.site.protocol's models."""
    from arena.site import protocol as p

    models = (p.CasesRequest, p.CasesResponse, p.ClaimRequest, p.ClaimResponse, p.LeaseRequest, p.CaseReport,
              p.FinishRequest, p.FinishResponse)
    for m in models:
        sch = m.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in sch.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[m.__name__] = sch
    sec = [{"siteWorker": []}]

    def body(model) -> dict:
        return {"required": True, "content": {"application/json": {"schema": REF(model.__name__)}}}

    base = {"400": e400, "401": e401}
    lease_ops = {**base, "404": _err("no such evaluation in the token's scope"), "409": _err("lease lost")}
    ev = {"name": "evaluation_id", "in": "path", "required": True,
          "schema": {"type": "integer", "minimum": 1, "maximum": 2147483647}}
    paths.update({
        "/site/cases": {"post": {
            "operationId": "siteRegisterCases", "summary": "A site's cases of a phase: keys and checksums only",
            "security": sec, "requestBody": body(p.CasesRequest),
            "responses": {**_ok("registered", REF("CasesResponse")), **base, "403": e403,
                          "409": _err("a known case with other checksums: nothing registered")}}},
        "/site/claim": {"post": {
            "operationId": "siteClaim", "summary": "Take the oldest queued evaluation of the token's phases (a lease)",
            "security": sec, "requestBody": body(p.ClaimRequest),
            "responses": {**_ok("claimed: run these cases", REF("ClaimResponse")),
                          "204": {"description": "nothing to do"}, **base}}},
        "/site/evaluations/{evaluation_id}/heartbeat": {"post": {
            "operationId": "siteHeartbeat", "summary": "The lease holder is alive", "security": sec,
            "parameters": [ev], "requestBody": body(p.LeaseRequest),
            "responses": {**_ok("beat", {"type": "object", "required": ["ok"],
                                         "properties": {"ok": {"type": "boolean"}}}), **lease_ops}}},
        "/site/images/{sha256}": {"get": {
            "operationId": "siteImage", "summary": "The submission's image tarball (Range: bytes=N- resumes)",
            "security": sec, "parameters": [{"name": "sha256", "in": "path", "required": True,
                                             "schema": {"type": "string", "pattern": p.HEX64}}],
            "responses": {"200": {"description": "the tarball", "content": {"application/octet-stream": {
                              "schema": {"type": "string", "format": "binary"}}}},
                          "206": {"description": "the rest of it", "content": {"application/octet-stream": {
                              "schema": {"type": "string", "format": "binary"}}}},
                          "416": _err("range not satisfiable"), **base,
                          "404": _err("no such image for an evaluation this token holds")}}},
        "/site/models/{sha256}": {"get": {
            "operationId": "siteModel", "summary": "The submission's model archive (Range: bytes=N- resumes)",
            "security": sec, "parameters": [{"name": "sha256", "in": "path", "required": True,
                                             "schema": {"type": "string", "pattern": p.HEX64}}],
            "responses": {"200": {"description": "the archive", "content": {"application/octet-stream": {
                              "schema": {"type": "string", "format": "binary"}}}},
                          "206": {"description": "the rest of it", "content": {"application/octet-stream": {
                              "schema": {"type": "string", "format": "binary"}}}},
                          "416": _err("range not satisfiable"), **base,
                          "404": _err("no such model archive for an evaluation this token holds")}}},
        "/site/evaluations/{evaluation_id}/cases/{key}": {"post": {
            "operationId": "siteRecordCase", "summary": "One case's outcome (recorded once)", "security": sec,
            "parameters": [ev, {"name": "key", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": p.CASE_KEY}}],
            "requestBody": body(p.CaseReport),
            "responses": {"201": {"description": "recorded", "content": {"application/json": {"schema": {
                "type": "object", "required": ["recorded"], "properties": {"recorded": {"type": "boolean"}}}}}},
                **lease_ops, "404": _err("no such evaluation, or a case the phase does not have"),
                "409": _err("lease lost, or the case is already recorded (nothing overwritten)")}}},
        "/site/evaluations/{evaluation_id}/finish": {"post": {
            "operationId": "siteFinish", "summary": "All cases recorded: set the final status", "security": sec,
            "parameters": [ev], "requestBody": body(p.FinishRequest),
            "responses": {**_ok("final status", REF("FinishResponse")), **lease_ops,
                          "409": _err("lease lost, or cases not recorded yet")}}},
    })
