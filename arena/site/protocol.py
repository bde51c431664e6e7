"""The site worker protocol's bodies (JSON under /api/v1/site/), shared by the server and the worker.

Every refusal is ``{"error": "<what is wrong>"}`` with a 4xx status: 401 unknown or revoked token, 403 a
phase outside the token's scope, 404 what the token may not see or what does not exist, 409 a lease lost
or a result already recorded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HEX64 = r"^[0-9a-f]{64}$"
CASE_KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
TOKEN_PREFIX = "arena-site-"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteCase(_Body):
    key: str = Field(pattern=CASE_KEY)
    image_sha256: str = Field(pattern=HEX64)
    reference_sha256: str = Field(pattern=HEX64)


class CasesRequest(_Body):
    """POST /cases: the site's cases of one phase (keys and checksums only, never pixels)."""

    task: str = Field(max_length=100)
    phase: str = Field(max_length=50)
    cases: list[SiteCase] = Field(max_length=100_000)


class CasesResponse(_Body):
    added: int
    unchanged: int


class ClaimRequest(_Body):
    worker: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ImageRef(_Body):
    """A file the worker downloads by digest: the submission's image tarball or its model archive."""

    sha256: str = Field(pattern=HEX64)  # of the stored tarball
    size: int  # bytes
    url: str  # /api/v1/site/images/<sha256> or /api/v1/site/models/<sha256>


class ClaimResponse(_Body):
    """200 from POST /claim (204: nothing to do). ``cases``: the keys still to run, in phase order.
    ``spec``: the task's validated spec snapshot (the worker has no database to read it from). ``model``:
    None when the submission has no separate model archive."""

    evaluation: int
    lease: str
    heartbeat_s: float
    stale_after_s: float
    task: str
    phase: str
    submission: int
    image: ImageRef
    model: ImageRef | None = None  # the submission's model archive, extracted read-only at /opt/ml/model
    cases: list[str]
    cases_total: int
    done: int
    spec: dict[str, Any]


class LeaseRequest(_Body):
    lease: str = Field(min_length=1, max_length=100)


class CaseReport(_Body):
    """POST /evaluations/<id>/cases/<key>: one case's outcome, as a local worker stores it.
    ``scores``: label id (as a string) → metric → value (None: excluded by the empty-mask policy)."""

    lease: str = Field(min_length=1, max_length=100)
    status: Literal["succeeded", "failed"]
    scores: dict[str, dict[str, float | None]]
    error: str | None = None
    failure: str | None = None
    exit_code: int | None = None
    runtime_s: float | None = None
    stats: dict[str, float | int | None] = Field(default_factory=dict)
    log_tail: str | None = None


class Stop(_Body):
    failure: str
    message: str
    fault: Literal["participant", "platform"]


class FinishRequest(_Body):
    lease: str = Field(min_length=1, max_length=100)
    stop: Stop | None = None


class FinishResponse(_Body):
    status: str


class ErrorBody(_Body):
    error: str
