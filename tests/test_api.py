"""The API's OpenAPI document matches its routes, and schemathesis finds no 500s and no response that
breaks the document (the app in-process over WSGI, with a real database)."""

from __future__ import annotations

import re

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

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
    app, _ = api_world
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


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


@schema.parametrize()
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms(case, api_world):
    _, token = api_world
    case.call_and_validate(headers=bearer(token), checks=[not_a_server_error, status_code_conformance,
                                                          content_type_conformance, response_schema_conformance])
