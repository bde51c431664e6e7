"""Receiving a submission: stream the upload to disk, check quota, record it, queue its intake job."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import ModelArchive, Phase, QuotaReservation, Submission, Task, Team, User, utcnow
from arena.runner.failures import Fault
from arena.runner.identity import NOBODY, effective_user
from arena.submissions.archive import ImageArchiveInfo, InvalidImageArchive, inspect_image_archive
from arena.submissions.model_archive import InvalidModelArchive, inspect_model_archive
from arena.tasks.spec import SLUG
from arena.tasks.store import spec_of

CHUNK = 1024 * 1024


class UploadError(ValueError):
    """The upload cannot be accepted (too large, empty, unknown task/phase, quota); says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class StoredUpload:
    path: Path
    sha256: str
    size: int


def store_upload(stream: BinaryIO, settings: Settings, max_bytes: int | None = None,
                 progress: Callable[[int], None] | None = None) -> StoredUpload:
    """Copy ``stream`` to the upload store in 1 MiB chunks, hashing as it goes; never all in memory.

    The file appears under its final name only when complete; a partial file is removed.
    """
    max_bytes = settings.max_upload_bytes if max_bytes is None else max_bytes
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.uploads_dir / f".partial-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(f"upload larger than the limit of {max_bytes / 2**20:.0f} MiB", status=413)
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise UploadError("the upload is empty")
        final = settings.uploads_dir / f"{digest.hexdigest()[:16]}-{uuid.uuid4().hex[:8]}.tar"
        os.replace(tmp, final)
        return StoredUpload(final, digest.hexdigest(), size)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def find_task_phase(session: Session, task_slug: str, phase_slug: str) -> tuple[Task, Phase]:
    """The task and its phase by slug; UploadError 404 when either does not exist."""
    task = session.scalar(select(Task).where(Task.slug == task_slug)) if re.fullmatch(SLUG, task_slug) else None
    if task is None:
        raise UploadError(f"no task {task_slug!r}", status=404)
    phase = next((p for p in task.phases if p.slug == phase_slug), None)
    if phase is None:
        raise UploadError(f"task {task_slug!r} has no phase {phase_slug!r} "
                          f"(phases: {', '.join(p.slug for p in task.phases)})", status=404)
    return task, phase


def check_quota(session: Session, task: Task, phase: Phase, team: Team) -> None:
    """Refuse when the phase is closed, or the team has used the phase's submissions for the last 24 hours
    (uploads in progress included). A quick look without the lock: :func:`reserve_slot` decides."""
    closed = phase.accepting()
    if closed:
        raise UploadError(f"{closed}: submissions are not accepted now", status=403)
    limit, used = quota(session, task, phase, team)
    if used >= limit:
        raise QuotaExceeded(team, phase, limit, _in_progress(session, phase, team))


class QuotaExceeded(UploadError):
    """429: the team's submissions of the phase for the last 24 hours are used (or held by uploads in progress)."""

    def __init__(self, team: Team, phase: Phase, limit: int, in_progress: int):
        held = f", {in_progress} of them by upload(s) still in progress" if in_progress else ""
        super().__init__(f"team {team.name!r} has used its {limit} submission(s) per 24 h in phase {phase.slug!r}"
                         f"{held}; try again later", status=429)


def quota(session: Session, task: Task, phase: Phase, team: Team) -> tuple[int, int]:
    """(submissions allowed per 24 h, used in the last 24 h) for ``team`` in ``phase``. The phase's
    organizer setting overrides task.yaml; refused intakes (failed) do not count; a slot held by an
    upload in progress (:func:`reserve_slot`) does."""
    limit = phase.submission_limit if phase.submission_limit is not None else \
        spec_of(task).phase(phase.slug).submission_limit
    return limit, len(_charged(session, phase, team)) + _in_progress(session, phase, team)


def _charged(session: Session, phase: Phase, team: Team) -> list[Submission]:
    """``team``'s submissions in ``phase`` of the last 24 hours that use its quota."""
    since = utcnow() - dt.timedelta(days=1)
    subs = session.scalars(select(Submission).where(
        Submission.phase_id == phase.id, Submission.team_id == team.id, Submission.created_at >= since,
        Submission.status != SubmissionStatus.FAILED)).all()
    return [sub for sub in subs if not _not_charged(sub)]


def quota_frees_at(session: Session, phase: Phase, team: Team) -> dt.datetime | None:
    """When (UTC) the oldest of ``team``'s charged submissions in ``phase`` leaves the 24-hour window and
    one more submission is allowed; None when no submission is charged (only uploads in progress, which
    free their slot when they finish or are refused)."""
    subs = _charged(session, phase, team)
    return min(sub.created_at for sub in subs) + dt.timedelta(days=1) if subs else None


def _in_progress(session: Session, phase: Phase, team: Team) -> int:
    """Slots of ``team`` in ``phase`` held by uploads in progress (live reservations)."""
    return session.scalar(select(func.count(QuotaReservation.id)).where(
        QuotaReservation.phase_id == phase.id, QuotaReservation.team_id == team.id,
        QuotaReservation.expires_at > utcnow())) or 0


def _lock_team(session: Session, team: Team) -> None:
    """Serialize the quota decisions of ``team`` until the session commits or rolls back.

    The UPDATE takes the team row's lock on PostgreSQL (another transaction's UPDATE waits for it, and
    its next statement sees what this one committed) and the database write lock on SQLite (WAL: one
    writer; the others wait out the busy timeout). Counting after it is therefore not racy."""
    session.execute(update(Team).where(Team.id == team.id).values(quota_serial=Team.quota_serial + 1))


def reserve_slot(session: Session, settings: Settings, task: Task, phase: Phase, user: User) -> int:
    """Hold one of the phase's submission slots for ``user``'s team before an upload's body is read.

    Check and reservation are one step (:func:`_lock_team`), so parallel uploads cannot all pass a
    check that only one of them fits. Commits (the other uploads must see the slot taken) and returns
    the reservation's id; raises :class:`QuotaExceeded` (429) when no slot is left, or UploadError
    (403) when the phase is closed. The slot counts until :func:`create_submission` turns it into the
    submission, :func:`release_slot` gives it back, or ``settings.upload_reservation_s`` pass with no
    :func:`refresh_slot` (a process that died mid-upload)."""
    team = user.team
    if team is None:
        raise UploadError(f"user {user.name!r} is in no team: create or join one on your account page", 403)
    closed = phase.accepting()
    if closed:
        raise UploadError(f"{closed}: submissions are not accepted now", 403)
    session.commit()  # a fresh transaction: on SQLite a stale read snapshot could not take the write lock
    try:
        _lock_team(session, team)
        session.execute(delete(QuotaReservation).where(
            QuotaReservation.team_id == team.id, QuotaReservation.expires_at <= utcnow()))
        limit, used = quota(session, task, phase, team)
        if used >= limit:
            raise QuotaExceeded(team, phase, limit, _in_progress(session, phase, team))
        row = QuotaReservation(phase_id=phase.id, team_id=team.id, user_id=user.id,
                               expires_at=utcnow() + dt.timedelta(seconds=settings.upload_reservation_s))
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return row.id


def refresh_slot(session: Session, settings: Settings, reservation_id: int) -> None:
    """Keep a reservation alive while its upload's bytes arrive (commits)."""
    session.execute(update(QuotaReservation).where(QuotaReservation.id == reservation_id).values(
        expires_at=utcnow() + dt.timedelta(seconds=settings.upload_reservation_s)))
    session.commit()


def release_slot(session: Session, reservation_id: int) -> None:
    """Give a reserved slot back (the upload was refused, aborted or failed); rolls back what the session
    had pending, then commits the release."""
    session.rollback()
    session.execute(delete(QuotaReservation).where(QuotaReservation.id == reservation_id))
    session.commit()


def _claim_slot(session: Session, task: Task, phase: Phase, team: Team, reservation_id: int | None) -> None:
    """Under the team's lock: turn the reservation into the submission being added (it is deleted in the
    same transaction), or, without a live one (none taken, or it expired during a stalled upload), check
    that a slot is free now."""
    _lock_team(session, team)
    row = session.get(QuotaReservation, reservation_id, populate_existing=True) if reservation_id else None
    live = row is not None and row.team_id == team.id and row.phase_id == phase.id and row.expires_at > utcnow()
    if row is not None:
        session.delete(row)
        session.flush()
    if not live:
        limit, used = quota(session, task, phase, team)
        if used >= limit:
            raise QuotaExceeded(team, phase, limit, _in_progress(session, phase, team))


def _not_charged(sub: Submission) -> bool:
    """A submission whose latest evaluation was cancelled, or failed because of the platform (workers kept
    dying, the engine could not start the container, no GPU), does not use the team's quota."""
    ev = sub.latest_evaluation
    if ev is None:
        return False
    if ev.status == EvaluationStatus.CANCELLED:
        return True
    return ev.status == EvaluationStatus.FAILED and ev.fault == Fault.PLATFORM.value


def check_archive(session: Session, settings: Settings, phase: Phase, team: Team, path: Path) -> ImageArchiveInfo:
    """Validate the uploaded archive before anything is recorded (UploadError 400/409 otherwise).

    Refuses: anything that is not a single-image amd64 ``docker save`` archive within the caps; a root
    image when ARENA_ROOT_IMAGES=reject; the same image (by ID) the team already has in this phase.
    """
    try:
        info = inspect_image_archive(path)
    except InvalidImageArchive as e:
        raise UploadError(f"invalid image archive: {e}") from None
    if settings.root_images == "reject" and effective_user(info.user) == NOBODY:
        raise UploadError(f"the image runs as root (USER {info.user or 'unset'}); this platform requires a "
                          "non-root USER in the Dockerfile")
    dup = session.scalar(select(Submission.id).where(
        Submission.phase_id == phase.id, Submission.team_id == team.id, Submission.image_id == info.image_id,
        Submission.status != SubmissionStatus.FAILED))
    if dup is not None:
        raise UploadError(f"this image ({info.image_id[:19]}) was already submitted to phase {phase.slug!r} as "
                          f"submission {dup}", status=409)
    return info


def store_model_archive(session: Session, settings: Settings, team: Team, stream: BinaryIO) -> ModelArchive:
    """Stream a model tarball to disk, check it (:func:`arena.submissions.model_archive.inspect_model_archive`)
    and record it for ``team`` (once per content: the same archive again returns the stored one). A refused
    archive raises UploadError (400, naming the member) and nothing is kept."""
    upload = store_upload(stream, settings)
    try:
        info = inspect_model_archive(upload.path)
    except InvalidModelArchive as e:
        upload.path.unlink(missing_ok=True)
        raise UploadError(f"invalid model archive: {e}") from None
    known = session.scalar(select(ModelArchive).where(ModelArchive.team_id == team.id,
                                                      ModelArchive.sha256 == upload.sha256))
    if known is not None:
        upload.path.unlink(missing_ok=True)
        return known
    dest = settings.uploads_dir / "models" / str(team.id)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / f"{upload.sha256}.{'tar' if info.compression == 'none' else 'tar.' + info.compression}"
    os.replace(upload.path, final)
    archive = ModelArchive(team=team, sha256=upload.sha256, path=str(final), bytes=info.bytes,
                           unpacked_bytes=info.unpacked_bytes, files=info.files)
    session.add(archive)
    session.flush()
    return archive


def find_model_archive(session: Session, team: Team, sha256: str) -> ModelArchive:
    """The team's model archive with this sha256 (hex; a unique prefix of at least 12 digits will do);
    UploadError (400) when the team has uploaded none such."""
    sha = (sha256 or "").strip().lower().removeprefix("sha256:")
    found = [] if not re.fullmatch(r"[0-9a-f]{12,64}", sha) else session.scalars(select(ModelArchive).where(
        ModelArchive.team_id == team.id, ModelArchive.sha256.startswith(sha))).all()
    if len(found) != 1:
        raise UploadError(f"model {sha256[:80]!r}: your team has uploaded no such model archive "
                          "(POST /api/v1/models returns its sha256)")
    return found[0]


def create_submission(session: Session, task_slug: str, phase_slug: str, user: User, upload: StoredUpload,
                      upload_name: str | None = None, label: str | None = None,
                      settings: Settings | None = None, reservation: int | None = None,
                      model: str | None = None) -> Submission:
    """Check and record an uploaded submission (status ``uploaded``); the caller commits and queues its intake.

    With ``settings``, the archive is validated now (see :func:`check_archive`); a refusal raises
    UploadError and the caller removes the upload, so nothing is stored. ``reservation`` (from
    :func:`reserve_slot`) becomes the submission; without one the quota is checked and charged in one
    step under the team's lock, which is held until the caller commits. ``model``: the sha256 of a model
    archive the team uploaded (:func:`store_model_archive`), extracted at /opt/ml/model when it runs.
    """
    task, phase = find_task_phase(session, task_slug, phase_slug)
    if user.team is None:
        raise UploadError(f"user {user.name!r} is in no team; add them to one first", status=403)
    archive = find_model_archive(session, user.team, model) if model else None
    if reservation is None:
        check_quota(session, task, phase, user.team)  # fail fast; _claim_slot below decides
    info = check_archive(session, settings, phase, user.team, upload.path) if settings is not None else None
    _claim_slot(session, task, phase, user.team, reservation)
    sub = Submission(task=task, phase=phase, team=user.team, user=user, label=label,
                     status=SubmissionStatus.UPLOADED, upload_name=upload_name, upload_path=str(upload.path),
                     upload_sha256=upload.sha256, upload_bytes=upload.size,
                     image_id=info.image_id if info else None, image_user=info.user if info else None,
                     image_bytes=info.uncompressed_bytes if info else None, model_archive=archive)
    session.add(sub)
    session.flush()
    return sub
