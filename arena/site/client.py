"""The site worker's HTTP client of /api/v1/site/ (one requests.Session, bearer worker token).

While the server is unreachable (connection refused or reset, a timeout, a 502/503/504 from a proxy in
front of it) a call is tried again with doubling pauses (0.5 s up to ``max_pause_s``) for up to its retry
budget (None: until the server answers), then :class:`ServerUnreachable` is raised. An idempotent call
(registering the site's cases) is also tried again on any other 5xx: the server's own trouble, such as a
race with another worker's request or its database away, is not an answer to it. A 401 (token unknown
or revoked) raises :class:`TokenRefused`; any other refusal :class:`Refused` with the status and the
server's message.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import requests

from arena.site.protocol import CaseReport, CasesResponse, ClaimResponse, FinishRequest, Stop

log = logging.getLogger("arena.site")

RETRY_STATUSES = (502, 503, 504)  # a proxy or load balancer saying the server behind it is away


class ServerUnreachable(Exception):
    """The server did not answer within the call's retry budget."""


class Refused(Exception):
    """The server refused the request: ``status`` and its ``{"error": ...}`` message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class TokenRefused(Refused):
    """401: the worker token is unknown or was revoked."""


class SiteClient:
    """Calls of the site protocol against ``server`` (its base URL, e.g. ``https://arena.example.org``)."""

    def __init__(self, server: str, token: str, timeout_s: float = 30.0, max_pause_s: float = 30.0,
                 say: Callable[[str], None] = log.info) -> None:
        self.base = server.rstrip("/")
        self.timeout_s, self.max_pause_s, self.say = timeout_s, max_pause_s, say
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, retry_s: float | None = None, what: str = "",
                idempotent: bool = False, **kw: Any) -> requests.Response:
        """One call, retried while the server is unreachable (with ``idempotent``: or answers any 5xx) for up
        to ``retry_s`` seconds (None: forever; 0: one try). Raises ServerUnreachable, TokenRefused or
        Refused; returns a 2xx response."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        deadline = None if retry_s is None else time.monotonic() + retry_s
        pause = 0.5
        timeout = kw.pop("timeout", self.timeout_s)
        while True:
            try:
                resp = self.session.request(method, url, timeout=timeout, **kw)
                if resp.status_code not in RETRY_STATUSES and not (idempotent and resp.status_code >= 500):
                    break
                problem = f"HTTP {resp.status_code}"
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = str(e).splitlines()[0][:200]
            if deadline is not None and time.monotonic() + pause > deadline:
                raise ServerUnreachable(f"{what or path}: the server at {self.base} is unreachable ({problem})")
            self.say(f"{what or path}: the server is unavailable ({problem}); trying again in {pause:.1f} s")
            time.sleep(pause)
            pause = min(pause * 2, self.max_pause_s)
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error") or resp.text
            except ValueError:
                message = resp.text[:500]
            raise (TokenRefused if resp.status_code == 401 else Refused)(resp.status_code, message)
        return resp

    # -- the protocol ----------------------------------------------------------------------------------

    def register_cases(self, task: str, phase: str, cases: list[dict], retry_s: float | None = None
                       ) -> CasesResponse:
        r = self.request("POST", "/api/v1/site/cases", retry_s, "registering cases", idempotent=True,
                         json={"task": task, "phase": phase, "cases": cases})
        return CasesResponse.model_validate(r.json())

    def claim(self, worker: str, retry_s: float | None = None) -> ClaimResponse | None:
        r = self.request("POST", "/api/v1/site/claim", retry_s, "claiming", json={"worker": worker})
        return None if r.status_code == 204 else ClaimResponse.model_validate(r.json())

    def heartbeat(self, evaluation_id: int, lease: str, retry_s: float | None = 0) -> None:
        self.request("POST", f"/api/v1/site/evaluations/{evaluation_id}/heartbeat", retry_s, "heartbeat",
                     json={"lease": lease}, timeout=10)

    def record(self, evaluation_id: int, key: str, report: CaseReport, retry_s: float | None = 0) -> None:
        self.request("POST", f"/api/v1/site/evaluations/{evaluation_id}/cases/{key}", retry_s,
                     f"reporting case {key}", json=report.model_dump())

    def finish(self, evaluation_id: int, lease: str, stop: Stop | None, retry_s: float | None = None) -> str:
        body = FinishRequest(lease=lease, stop=stop).model_dump()
        r = self.request("POST", f"/api/v1/site/evaluations/{evaluation_id}/finish", retry_s, "finishing", json=body)
        return r.json()["status"]

    def image(self, url: str, offset: int = 0, retry_s: float | None = None) -> requests.Response:
        """The image tarball from byte ``offset`` on (a streamed response: 200 whole, 206 the rest)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.request("GET", url, retry_s, "downloading the image", headers=headers, stream=True)
