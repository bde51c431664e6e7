"""The site worker (``arena site-worker``): evaluates a site phase's submissions on the site's own cases and
sends back only what a local worker records per case (scores, status, run statistics, the log tail, which
only organizers see). It needs no database, Redis or shared folder: only the server's HTTP API and a worker
token.

Loop: register the site's cases (keys and checksums of ``DATA/<task>/<phase>/``, the ``arena task
import-cases`` layout) → claim an evaluation (a lease) → download its image by digest (resumed, checked) →
load it into this machine's Docker engine (a model archive, when the submission has one, is downloaded the
same way and extracted read-only at /opt/ml/model) → run the cases still to do through the same case loop as local
workers (arena.runner.jobs.run_case_loop: the same sandbox, limits, scoring and stop rules) → report each
case as it finishes → finish. A thread beats the lease's heartbeat every ``heartbeat_s``; a 409 (cancelled,
re-queued, held by another lease) or 401 (token revoked) stops the evaluation before its next case.

Every outcome is first written to the spool (``ARENA_HOME/site-spool/evaluation-<id>/<key>.json``,
atomically) and removed once the server has it. While the server is unreachable the cases keep running and
their outcomes stay in the spool; they are reported when it is back (before the evaluation finishes, and
at the next start). A 409 then (recorded already, or the lease lapsed and the evaluation went back to the
queue) drops the entry: nothing is counted twice.

A run that breaks off (Docker engine gone, a download that never matches its digest) stops heartbeating:
the lease lapses and the server re-queues the evaluation (finished cases kept), as for a lost local worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from arena.config import Settings
from arena.site.client import Refused, ServerUnreachable, SiteClient, TokenRefused
from arena.site.download import download_image, file_sha256, image_lock
from arena.site.protocol import CaseReport, ClaimResponse, Stop

log = logging.getLogger("arena.site")

SERVER_ERROR_PATIENCE_S = 600.0  # how long the finishing worker keeps re-sending results the server fails on (5xx)


class SiteWorkerError(Exception):
    """The site worker cannot go on (its token refused, its case folder broken); the message says why."""


# -- the site's cases ------------------------------------------------------------------------------

def case_sha256(path: Path) -> str:
    """sha256 of a case file; of a DICOM series folder: over its files' relative names and contents."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + file_sha256(p).encode())
    return h.hexdigest()


def scan_site_data(data_dir: Path) -> dict[tuple[str, str], dict]:
    """``(task, phase)`` → case key → FolderCase for every ``data_dir/<task>/<phase>/`` folder. Raises
    SiteWorkerError listing every layout problem (each naming its file)."""
    from arena.tasks.importing import find_cases

    if not data_dir.is_dir():
        raise SiteWorkerError(f"{data_dir}: no such folder (the site's cases go in <task>/<phase>/ below it)")
    out: dict[tuple[str, str], dict] = {}
    problems: list[str] = []
    for task_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for phase_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            found, bad = find_cases(phase_dir)
            problems += bad
            out[(task_dir.name, phase_dir.name)] = {c.key: c for c in found}
    if problems:
        raise SiteWorkerError("the site's case folder has problems:\n  " + "\n  ".join(problems))
    return out


def register_site_cases(client: SiteClient, site_cases: dict[tuple[str, str], dict],
                        say: Callable[[str], None]) -> None:
    """Tell the server which cases the site holds (keys and checksums only). A folder of a phase outside the
    token's scope is skipped with a note; a case the server knows with other checksums stops the worker. The
    call is idempotent: the client sends it again while the server is away or fails (5xx)."""
    for (task, phase), cases in site_cases.items():
        body = [{"key": k, "image_sha256": case_sha256(c.image), "reference_sha256": case_sha256(c.reference)}
                for k, c in sorted(cases.items()) if Path(c.reference).exists()]
        try:
            res = client.register_cases(task, phase, body)
        except TokenRefused as e:
            raise SiteWorkerError(f"the server refused the worker token: {e.message}") from None
        except Refused as e:
            if e.status in (403, 404):
                say(f"{task}/{phase}: not served with this token ({e.message}); skipped")
                continue
            raise SiteWorkerError(f"{task}/{phase}: the server refused the site's cases: {e.message}") from None
        say(f"{task}/{phase}: {len(body)} case(s) registered ({res.added} new, {res.unchanged} unchanged)")


# -- the spool ----------------------------------------------------------------------------------------

class Spool:
    """Case outcomes the server has not acknowledged: ``root/evaluation-<id>/<key>.json`` (written atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, evaluation_id: int, key: str, report: CaseReport) -> Path:
        folder = self.root / f"evaluation-{evaluation_id}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}.json"
        tmp = folder / f".{key}.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"evaluation": evaluation_id, "key": key, "report": report.model_dump()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def entries(self, evaluation_id: int | None = None) -> list[tuple[Path, int, str, CaseReport]]:
        """``(path, evaluation, key, report)`` of the pending outcomes (one evaluation's, or all), oldest first.
        An entry that vanishes while it is listed (another worker sharing this ARENA_HOME reported and dropped
        it) is left out."""
        folders = [self.root / f"evaluation-{evaluation_id}"] if evaluation_id is not None else \
            sorted(self.root.glob("evaluation-*")) if self.root.is_dir() else []
        out = []
        for folder in folders:
            found = []
            for p in folder.glob("*.json") if folder.is_dir() else []:
                try:
                    found.append((p.stat().st_mtime, p, p.read_text()))
                except FileNotFoundError:
                    continue
            for _, p, text in sorted(found, key=lambda e: e[0]):
                try:
                    d = json.loads(text)
                    out.append((p, int(d["evaluation"]), str(d["key"]), CaseReport.model_validate(d["report"])))
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("spool entry %s is unreadable (%s); dropped", p, e)
                    p.unlink(missing_ok=True)
        return out

    def drop(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # the last one of its evaluation
        except OSError:
            pass


def flush_spool(client: SiteClient, spool: Spool, evaluation_id: int | None, retry_s: float | None,
                say: Callable[[str], None]) -> str:
    """Report the spooled outcomes (one evaluation's or all). Returns "done", "pending" (the server is
    unreachable or failed with a 5xx, its own trouble: they stay spooled) or "lost" (the server refused one:
    the lease is gone; dropped)."""
    result = "done"
    for path, ev_id, key, report in spool.entries(evaluation_id):
        try:
            client.record(ev_id, key, report, retry_s=retry_s)
        except ServerUnreachable:
            return "pending"
        except TokenRefused:
            raise
        except Refused as e:
            if e.status >= 500:  # the server's database or Redis away: not a refusal; nothing is lost
                say(f"evaluation {ev_id}: case {key} not reported yet (the server failed: {e.message[:200]}); "
                    "kept in the spool")
                return "pending"
            if e.status == 409 and "already recorded" in e.message:
                pass  # an earlier try of this report landed (its answer was lost): nothing to add
            else:
                say(f"evaluation {ev_id}: case {key} not recorded ({e.message}); dropped")
                result = "lost"
        spool.drop(path)
    return result


# -- one claimed evaluation ---------------------------------------------------------------------------

class _Lease:
    """The claimed evaluation's lease: a heartbeat thread, and whether the lease was lost."""

    def __init__(self, client: SiteClient, claim: ClaimResponse, say: Callable[[str], None]) -> None:
        self.client, self.claim, self.say = client, claim, say
        self.on_lost: Callable[[], None] | None = None  # stops the case in progress (its containers)
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"arena-site-heartbeat-{claim.evaluation}",
                                        daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.claim.heartbeat_s):
            try:
                self.client.heartbeat(self.claim.evaluation, self.claim.lease)
            except ServerUnreachable as e:
                self.say(f"evaluation {self.claim.evaluation}: heartbeat not delivered ({e}); carrying on")
            except Refused as e:
                if e.status >= 500:  # the server's own trouble (its Redis or database away): beat again next
                    # period, as a local worker does through a Redis outage; if it lasts, the lease lapses
                    self.say(f"evaluation {self.claim.evaluation}: heartbeat failed on the server ({e}); carrying on")
                    continue
                self.lose(e.message)  # 401 revoked, 404/409 cancelled, re-queued or taken over
                return
            except Exception as e:  # noqa: BLE001 - a heartbeat must never end the worker
                self.say(f"evaluation {self.claim.evaluation}: heartbeat failed ({e})")

    def lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()
            self.say(f"evaluation {self.claim.evaluation}: lease lost ({reason}); stopping it")
            if self.on_lost is not None:
                try:
                    self.on_lost()
                except Exception as e:  # noqa: BLE001 - the case loop stops before the next case anyway
                    self.say(f"evaluation {self.claim.evaluation}: could not stop the case in progress ({e})")

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def outcome_report(out, lease: str) -> CaseReport:
    """The protocol's body for one CaseOutcome (scores keyed by the label id as a string)."""
    from arena.runner.monitor import STAT_COLUMNS

    def num(v):
        return None if v is None else float(v)

    return CaseReport(
        lease=lease, status="succeeded" if out.ok else "failed",
        scores={str(lab): {m: num(v) for m, v in vals.items()} for lab, vals in out.scores.items()},
        error=out.error, failure=out.failure.value if out.failure else None, exit_code=out.exit_code,
        runtime_s=num(out.runtime_s), log_tail=out.log_tail or None,
        stats={k: v for k, v in out.stats.items() if k in STAT_COLUMNS})


class SiteRecorder:
    """Where the shared case loop (arena.runner.jobs.run_case_loop) records at a site: the spool, then the
    server."""

    def __init__(self, client: SiteClient, spool: Spool, lease: _Lease, say: Callable[[str], None]) -> None:
        self.client, self.spool, self.lease, self.say = client, spool, lease, say
        self.claim = lease.claim

    def owned(self) -> bool:
        return not self.lease.lost.is_set()

    def record(self, key: str, out, index: int) -> bool:
        ev = self.claim.evaluation
        self.spool.put(ev, key, outcome_report(out, self.claim.lease))
        state = flush_spool(self.client, self.spool, ev, 0, self.say)
        self.say(f"evaluation {ev}: case {index}/{self.claim.cases_total} ({key}) "
                 f"{'succeeded' if out.ok else 'failed: ' + (out.error or '')[:120]}"
                 + ("; not reported yet (server unreachable; kept in the spool)" if state == "pending" else ""))
        if state == "lost":
            self.lease.lose("the server refused a result")
        return self.owned()

    def finish(self, stop, stop_fault) -> str | None:
        ev = self.claim.evaluation
        pause, failing_since = 0.5, time.monotonic()
        while True:  # the spool first: the server counts only what it has
            if self.lease.lost.is_set():
                return None
            state = flush_spool(self.client, self.spool, ev, None, self.say)
            if state == "lost":
                self.lease.lose("the server refused a result")
                return None
            if state == "done":
                break
            # "pending": the server answered 5xx (an unreachable one is waited for inside the call)
            if time.monotonic() - failing_since > SERVER_ERROR_PATIENCE_S:
                self.lease.lose(f"the server failed to record results for {SERVER_ERROR_PATIENCE_S:.0f} s; "
                                "they stay in the spool and are reported when the worker starts again")
                return None
            time.sleep(pause)
            pause = min(pause * 2, 30.0)
        body = Stop(failure=stop[0].value, message=stop[1], fault=stop_fault.value) if stop else None
        try:
            status = self.client.finish(ev, self.claim.lease, body)
        except Refused as e:
            self.lease.lose(e.message)
            return None
        self.say(f"evaluation {ev}: {status}")
        return status


def _worker_label() -> str:
    """``host:pid`` of this process: its containers' arena.worker label, so that a local worker on the same
    engine leaves them alone while this process lives (arena.runner.jobs.live_local_worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_claim(settings: Settings, client: SiteClient, claim: ClaimResponse, site_cases: dict, checked: set,
              say: Callable[[str], None]) -> str | None:
    """Run one claimed evaluation to its end; its final status, or None when it was lost or broke off
    (then the lease lapses and the server re-queues it)."""
    from arena.runner.evaluate import CaseInput
    from arena.runner.jobs import (
        _Engine,
        _load_from_store,
        _model_mount,
        _remove_run_containers,
        image_cache,
        run_case_loop,
    )
    from arena.submissions.loading import image_present, submission_tag
    from arena.tasks.case_check import CaseCheckError, check_case
    from arena.tasks.spec import TaskSpec

    ev = claim.evaluation
    spec = TaskSpec.model_validate(claim.spec)
    local = site_cases.get((claim.task, claim.phase), {})
    missing = [k for k in claim.cases if k not in local]
    if missing:
        raise SiteWorkerError(f"evaluation {ev}: the server asks for cases this site does not hold in "
                              f"{claim.task}/{claim.phase}: {', '.join(missing[:10])}")
    problems = []
    for key in claim.cases:
        if (claim.task, key) not in checked:
            try:
                check_case(key, local[key].image, local[key].reference, spec.labels)
                checked.add((claim.task, key))
            except CaseCheckError as e:
                problems.append(str(e))
    if problems:
        raise SiteWorkerError(f"evaluation {ev}: the site's cases do not pass the case check:\n  " + "\n  ".join(problems))
    say(f"evaluation {ev} (submission {claim.submission}, {claim.task}/{claim.phase}): "
        f"{len(claim.cases)} of {claim.cases_total} case(s) to run")
    spool = Spool(settings.site_spool_dir)
    started = time.monotonic()
    with _Lease(client, claim, say) as lease, contextlib.ExitStack() as stack:
        try:
            images = settings.home / "site-images"
            known = images / f"{claim.image.sha256}.id"
            engine = _Engine(f"evaluation {ev}", settings.engine_wait_s)
            with image_lock(images, claim.image.sha256):
                image = known.read_text().strip() if known.is_file() else ""
                if not image or not image_present(engine.client, image):
                    archive = download_image(client, claim.image, images, say)
                    tag = submission_tag(settings.instance_id(), claim.submission)
                    image = engine.call(lambda c: _load_from_store(c, str(archive), tag), "loading the image")
                    known.write_text(image)
                    archive.unlink(missing_ok=True)  # the engine holds it now; the id file finds it again
            image_cache(settings, engine.client).touch(image)
            safe = re.sub(r"[^A-Za-z0-9._-]", "-", claim.lease)
            work = settings.work_dir / f"site-evaluation-{ev}" / safe
            mounts = {}
            if claim.model is not None:  # extracted read-only at /opt/ml/model, as a local worker does
                models = settings.home / "site-models"
                with image_lock(models, claim.model.sha256):
                    archive = download_image(client, claim.model, models, say, what="model archive")
                    mounts = _model_mount(stack, str(archive), work / "model", settings.run_root)
                    archive.unlink(missing_ok=True)  # extracted for this run; a later run fetches it again
            todo = [(k, CaseInput(k, Path(local[k].image), Path(local[k].reference))) for k in claim.cases]
            labels = {"arena.evaluation": str(ev), "arena.worker": _worker_label(), "arena.queue": settings.queue_name}
            # a lost lease (cancelled, re-queued, token revoked) ends the case in progress now, not at its end
            lease.on_lost = lambda: _remove_run_containers(engine.client, labels)
            return run_case_loop(settings, engine, spec, image, todo, n_cases=claim.cases_total, n_done=claim.done,
                                 work=work, results=settings.results_dir / f"site-evaluation-{ev}", labels=labels,
                                 mounts=mounts,
                                 recorder=SiteRecorder(client, spool, lease, say), what=f"evaluation {ev}",
                                 started=started)
        except (TokenRefused, SiteWorkerError):
            raise
        except Exception as e:  # noqa: BLE001 - the lease lapses and the server re-queues the evaluation
            log.exception("evaluation %s broke off", ev)
            say(f"evaluation {ev} broke off ({e.__class__.__name__}: {e}); its lease will lapse and the server "
                "re-queues it")
            lease.lose("the run broke off")
            return None


def _clear_engine(say: Callable[[str], None]) -> None:
    """Check that this machine's Docker engine answers (starting dockerd where Arena may), and remove what
    dead worker processes of this host left on it (a SIGKILLed site worker's running case)."""
    from arena.images.docker_client import DockerUnavailable
    from arena.runner.jobs import live_local_worker, remove_dead_workers_containers
    from arena.runner.sandbox import reap_leftovers
    from arena.services import ensure_docker

    try:
        engine = ensure_docker(log=say)
    except DockerUnavailable as e:
        raise SiteWorkerError(f"cannot start: no Docker engine ({e})") from None
    try:
        n = remove_dead_workers_containers(engine) + reap_leftovers(
            engine, keep=lambda labels: live_local_worker(labels.get("arena.worker")))
    finally:
        engine.close()
    if n:
        say(f"removed {n} container(s) left by dead workers")


def run_site_worker(settings: Settings, server: str, token: str, data: Path | None = None, gpu: str | None = None,
                    once: bool = False, name: str | None = None, say: Callable[[str], None] = log.info,
                    idle_s: float = 5.0) -> int:
    """Serve the token's phases until stopped (with ``once``: until nothing is left to claim). Returns how
    many evaluations it ran. Raises SiteWorkerError when it cannot go on."""
    from arena.runner.output_check import jail_problem
    from arena.runner.worker import pin_gpus

    problem = jail_problem()
    if problem:  # never score participant outputs outside the jail
        raise SiteWorkerError(f"cannot start: {problem}")
    if gpu is not None:
        pin_gpus(gpu, say)
    settings.ensure_dirs()
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name or socket.gethostname())[:60].lstrip("._-") or "site-worker"
    client = SiteClient(server, token, say=say)
    spool = Spool(settings.site_spool_dir)
    data_dir = Path(data) if data is not None else settings.site_data_dir
    try:
        pending = len(spool.entries())
        if pending:
            say(f"reporting {pending} spooled case outcome(s) from before")
            flush_spool(client, spool, None, None, say)
        site_cases = scan_site_data(data_dir)
        register_site_cases(client, site_cases, say)
        _clear_engine(say)
        say(f"site worker {name} serving {server} (cases from {data_dir})")
        checked: set = set()
        n = 0
        while True:
            claim = client.claim(name)
            if claim is None:
                if once:
                    say("nothing left to do")
                    return n
                time.sleep(idle_s)
                continue
            run_claim(settings, client, claim, site_cases, checked, say)
            n += 1
    except TokenRefused as e:
        raise SiteWorkerError(f"the server refused the worker token ({e.message}): ask the organizer for a new "
                              "one (arena site token)") from None
