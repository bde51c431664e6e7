"""Pre-rendered answers for the board: the task page and the JSON board as visitors without an account see
them, rendered once per state of what they show, kept raw and gzip-compressed, served with an ETag.

How a request is answered (:func:`cached_response`):

1. The request's own key (the URL parts that choose the answer, e.g. task slug, ``?phase=``, ``?organs=``)
   looks up an answer checked less than :data:`FRESH_S` seconds ago: served as it is, with no database
   read and no rendering.
2. Otherwise ``check()`` reads what the answer depends on (the task, the phase's settings, the board's
   result version, ...) and returns it as a hashable *state*, with the next moment it changes by the
   clock alone (a phase opening, closing, freezing or being revealed). An answer stored for that state is
   reused; only a new state renders (once per state and process, however many requests wait for it).

So a new result or a changed task or phase setting written by another process (the evaluation worker,
another web worker) reaches the page at most :data:`FRESH_S` seconds late; one committed by this process
(an organizer's change on the manage pages) at once: every commit of a database session in this process
ends the shortcut of step 1 for all answers. A time-set change (freeze, reveal, close) is never late: a
checked answer is not reused past the next such moment. The cache only holds what a visitor without an
account was shown when it was checked, so it never shows more than was public at most :data:`FRESH_S` ago.
Answers are kept per database (tests run many apps, each on a database of its own, in one process).

Headers: ``ETag`` (strong, from the body's SHA-256: equal bodies in every worker give equal tags; the
gzip body's tag ends in ``.gz``), ``Cache-Control: no-cache`` (browsers and proxies keep the answer but
ask again each time; ``If-None-Match`` with a current tag gets ``304 Not Modified`` and no body),
``Vary: Accept-Encoding, Cookie, Authorization`` (a signed-in visitor's page differs), and
``Content-Encoding: gzip`` when the request accepts gzip.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from flask import Response, current_app, g, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from arena.models import utcnow
from arena.web.boards import result_version

FRESH_S = 1.0
"""Seconds an answer, once checked against the database, is served without checking again (per worker)."""

MAX_ANSWERS = 32
"""Rendered answers kept per process (least recently used dropped first); a 200-entry, 22-organ board page
is ~0.7 MB raw and ~40 kB gzipped (benchmarks/bench_board_http.py), more with every organ column shown."""

MAX_REQUEST_KEYS = 512
"""Request keys remembered per process (a URL's query string is the visitor's choice: bounded)."""

VARY = "Accept-Encoding, Cookie, Authorization"

_clock: Callable[[], float] = time.monotonic  # tests move it


@dataclass(frozen=True)
class Answer:
    """One rendered answer: ``raw`` (UTF-8), ``gz`` (the same bytes gzip-compressed, deterministic: no
    time stamp in the header), ``etag`` (the quoted strong tag of ``raw``; ``gz``'s adds ``.gz``)."""

    raw: bytes
    gz: bytes
    etag: str
    mimetype: str

    @property
    def etag_gz(self) -> str:
        return self.etag[:-1] + '.gz"'


@dataclass(frozen=True)
class _Checked:
    answer: Answer
    until: float  # clock seconds
    generation: int  # of this process's commits (see _committed)


def encode(text: str, mimetype: str) -> Answer:
    """The answer for ``text``: its UTF-8 bytes, their gzip (level 6, mtime 0) and their ETag."""
    raw = text.encode()
    return Answer(raw=raw, gz=gzip.compress(raw, compresslevel=6, mtime=0),
                  etag=f'"{hashlib.sha256(raw).hexdigest()[:32]}"', mimetype=mimetype)


class _Store:
    """The process's answers by state and its checked answers by request key; thread-safe (gunicorn's
    gthread workers answer several requests at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: OrderedDict[Hashable, Answer] = OrderedDict()
        self.checked: OrderedDict[Hashable, _Checked] = OrderedDict()
        self.rendering: dict[Hashable, threading.Lock] = {}
        self.generation = 0

    def clear(self) -> None:
        with self.lock:
            self.answers.clear()
            self.checked.clear()


_STORE = _Store()


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    """Any commit in this process may have changed what an answer shows: re-check each answer next time."""
    with _STORE.lock:
        _STORE.generation += 1


def clear() -> None:
    """Forget every stored answer (tests; an organizer change that must show at once could call it)."""
    _STORE.clear()


def _answer_for(state: Hashable, render: Callable[[], str], mimetype: str) -> Answer:
    """The stored answer for ``state``, rendering it if there is none; one render per state at a time."""
    st = _STORE
    with st.lock:
        hit = st.answers.get(state)
        if hit is not None:
            st.answers.move_to_end(state)
            return hit
        gate = st.rendering.setdefault(state, threading.Lock())
    try:
        with gate:
            with st.lock:
                hit = st.answers.get(state)
            if hit is None:
                hit = encode(render(), mimetype)
                with st.lock:
                    st.answers[state] = hit
                    while len(st.answers) > MAX_ANSWERS:
                        st.answers.popitem(last=False)
    finally:
        with st.lock:
            st.rendering.pop(state, None)
    return hit


def cached_response(request_key: Hashable, check: Callable[[], tuple[Hashable, float | None]],
                    render: Callable[[], str], mimetype: str) -> Response:
    """The answer for ``request_key`` as a response (200, or 304 for a matching ``If-None-Match``).

    ``check()`` returns ``(state, changes_in_s)``: ``state`` is everything the body depends on (two
    requests with equal states get byte-equal bodies), ``changes_in_s`` the seconds until the state changes
    by the clock alone (None: not by the clock). It may abort (e.g. 404); nothing is stored then.
    ``render()`` returns the body's text for the state ``check()`` just returned, called in the same
    request (the database session holds what ``check()`` read).
    """
    now = _clock()
    st = _STORE
    database = current_app.config["ARENA"].database_url
    request_key = (database, request_key)
    with st.lock:
        checked = st.checked.get(request_key)
        generation = st.generation
    if checked is None or now >= checked.until or checked.generation != generation:
        state, changes_in_s = check()
        answer = _answer_for((database, mimetype, state), render, mimetype)
        until = now + FRESH_S if changes_in_s is None else now + min(FRESH_S, max(changes_in_s, 0.0))
        checked = _Checked(answer, until, generation)
        with st.lock:
            st.checked[request_key] = checked
            st.checked.move_to_end(request_key)
            while len(st.checked) > MAX_REQUEST_KEYS:
                st.checked.popitem(last=False)
    return respond(checked.answer)


def respond(answer: Answer) -> Response:
    """``answer`` as the request asks for it: gzip when accepted, 304 for a current ``If-None-Match``."""
    gz = request.accept_encodings.quality("gzip") > 0
    etag = answer.etag_gz if gz else answer.etag
    inm = request.if_none_match
    if inm and (inm.contains_weak(answer.etag.strip('"')) or inm.contains_weak(answer.etag_gz.strip('"'))):
        resp = Response(status=304)
    else:
        resp = Response(answer.gz if gz else answer.raw, mimetype=answer.mimetype)
        if gz:
            resp.headers["Content-Encoding"] = "gzip"
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["Vary"] = VARY
    resp.revalidate = True  # create_app's after_request keeps this Cache-Control (see arena/web/app.py)
    return resp


def digest(value) -> str | None:
    """A SHA-256 digest of a JSON-like value, for a state (None stays None: e.g. a freeze not yet
    snapshotted); values JSON cannot write (dates) count by their ``str``."""
    if value is None:
        return None
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def board_state(phase) -> tuple:
    """What a visitor without an account is shown of ``phase``'s board, for a state: ``("hidden",)``; the
    frozen snapshot (``"frozen"``, when the freeze began and the snapshot's digest: results that come in
    during the freeze change nothing); or the live board (``"live"`` and its result version, which also
    changes with the task's spec)."""
    if not phase.board_public():
        return ("hidden",)
    if phase.frozen():
        return ("frozen", phase.frozen_at, digest(phase.frozen_board))
    return ("live", result_version(g.db, phase))


def phase_times(phase) -> tuple[bool, ...]:
    """Which of ``phase``'s set times (opens, closes, freezes, is revealed) have passed: with the times
    themselves, all a page needs to know of the clock (open/closed, frozen, revealed, "freezes on")."""
    now = utcnow()
    return tuple(t is not None and t <= now for t in (phase.opens_at, phase.closes_at, phase.frozen_at,
                                                      phase.reveal_at))


def seconds_to_phase_change(phase) -> float | None:
    """Seconds until ``phase``'s next set time (opens, closes, freezes, is revealed) — what its board and
    page show changes then by the clock alone; None when none is ahead."""
    now = utcnow()
    ahead = [t for t in (phase.opens_at, phase.closes_at, phase.frozen_at, phase.reveal_at) if t and t > now]
    return (min(ahead) - now) / dt.timedelta(seconds=1) if ahead else None
