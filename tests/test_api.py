"""The API's OpenAPI document matches its routes, and schemathesis finds no 500s and no response that
breaks the document (the app in-process over WSGI, with a real database)."""

from __future__ import annotations

import re

import hypothesis
import jsonschema
import pytest
import schemathesis
from schemathesis.checks import (content_type_conformance, ensure_resource_availability, ignored_auth,
                                 missing_required_header, negative_data_rejection, not_a_server_error,
                                 positive_data_acceptance, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance, unsupported_method,
                                 use_after_free)
from schemathesis.config import SchemathesisConfig

from arena.lifecycle import EvaluationStatus

from web_helpers import bearer, fake_submission, make_task, make_user


@pytest.fixture
def api_world(settings, db, monkeypatch):
    task = make_task(db, settings)
    alice, token = make_user(db, "alice", team="Team Alice")
    org, org_token = make_user(db, "org")
    task.organizers.append(org)
    fake_submission(db, settings, task, "validation", alice)
    db.commit()
    monkeypatch.setenv("ARENA_UPLOAD_RATE", "1000")
    monkeypatch.setattr("arena.runner.jobs.enqueue_intake", lambda s, sid: "job")
    monkeypatch.setattr("arena.runner.jobs.create_evaluation", lambda s, sid: 1)
    from arena.web import create_app

    return create_app(settings), org_token


@pytest.fixture
def api_schema(api_world):
    """The served document, with schemathesis generating valid and invalid requests ("all") and sending the
    organizer's token as the document's bearer scheme (so that it also tries requests without it)."""
    app, token = api_world
    config = SchemathesisConfig.from_dict({"generation": {"mode": "all"},
                                           "auth": {"openapi": {"bearer": {"bearer": token}}}})
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)


def test_document_matches_routes(api_world):
    app, _ = api_world
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(re.sub(r"\{(\w+)\}", r"<\1>", path), m.upper()) for path, ops in doc["paths"].items() for m in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"<\1>", rule.rule[len("/api/v1"):])
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed


schema = schemathesis.pytest.from_fixture("api_schema")


# Bounded and deterministic: at most 25 examples per operation (about 10 s for all on 2 cores), derandomized.
@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms(case, api_world):
    """No 5xx; every status code and response documented; invalid requests refused and valid ones not; an
    undeclared method is a 405 with Allow; no operation ignores its authentication."""
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance, response_headers_conformance,
                                   negative_data_rejection, positive_data_acceptance, unsupported_method,
                                   ignored_auth, missing_required_header, use_after_free,
                                   ensure_resource_availability])


def _parameter_schema(doc: dict, path: str, method: str, name: str) -> dict:
    return next(p["schema"] for p in doc["paths"][path][method]["parameters"] if p["name"] == name)


def test_document_says_what_the_api_refuses(api_world):
    """What schemathesis found in the audit, each as the API answers it and the document describes it: a
    query value is refused with 400 exactly when the document says it is invalid."""
    app, token = api_world
    client = app.test_client()
    doc = client.get("/api/v1/openapi.json").get_json()
    cases = [("/tasks", "page", v) for v in ("1", "1000000", "1000001", "0")]
    cases += [("/evaluations", "status", v) for v in [st.value for st in EvaluationStatus] + ["bogus", ""]]
    for path, name, value in cases:
        valid = jsonschema.Draft202012Validator(_parameter_schema(doc, path, "get", name)).is_valid(
            int(value) if name == "page" else value)
        r = client.get(f"/api/v1{path}", query_string={name: value}, headers=bearer(token))
        assert (r.status_code == 200) == valid and r.status_code in (200, 400), (path, name, value, r.status_code)
        assert str(r.status_code) in doc["paths"][path]["get"]["responses"]
    # a token's name: a body that is not a JSON object, or a name with a control character, is a 400
    for body in (b"\x00", b"[null, null]", b'{"name": null}', b'{"name": "a\\u0000b"}', b'{"name": ""}'):
        r = client.post("/api/v1/tokens", data=body, headers={**bearer(token), "Content-Type": "application/json"})
        assert r.status_code == 400 and r.get_json()["error"], body
    assert client.post("/api/v1/tokens", headers=bearer(token)).status_code == 201
    assert client.post("/api/v1/tokens", json={"name": "laptop"}, headers=bearer(token)).status_code == 201
    # an undeclared method: 405 with the methods the path has
    r = client.open("/api/v1/tokens", method="TRACE", headers=bearer(token))
    assert r.status_code == 405 and {"GET", "POST"} <= {m.strip() for m in r.headers["Allow"].split(",")}
    # free text and slugs the database could not store or compare (PostgreSQL refuses NUL; labels are 200)
    label = _parameter_schema(doc, "/tasks/{slug}/phases/{phase}/submissions", "post", "label")
    for value in ("x" * label["maxLength"] + "x", "v1\x00"):
        assert not jsonschema.Draft202012Validator(label).is_valid(value)
        r = client.post("/api/v1/tasks/han-oar-22/phases/validation/submissions", query_string={"label": value},
                        data=b"x" * 100, headers=bearer(token))
        assert r.status_code == 400, r.get_json()
    for url in ("/api/v1/submissions?task=%00", "/api/v1/tasks/han%00oar", "/api/v1/submissions?task="):
        assert client.get(url, headers=bearer(token)).status_code in (400, 404), url
