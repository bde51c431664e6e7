"""Receiving a submission: stream the upload to disk, check quota, record it, queue its intake job."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from arena.config import Settings
from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Phase, Submission, Task, Team, User, utcnow
from arena.runner.sandbox import NOBODY, effective_user
from arena.submissions.archive import ImageArchiveInfo, InvalidImageArchive, inspect_image_archive
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
    task = session.scalar(select(Task).where(Task.slug == task_slug))
    if task is None:
        raise UploadError(f"no task {task_slug!r}", status=404)
    phase = next((p for p in task.phases if p.slug == phase_slug), None)
    if phase is None:
        raise UploadError(f"task {task_slug!r} has no phase {phase_slug!r} "
                          f"(phases: {', '.join(p.slug for p in task.phases)})", status=404)
    return task, phase


def check_quota(session: Session, task: Task, phase: Phase, team: Team) -> None:
    """Refuse when the phase is closed, or the team has used the phase's submissions for the last 24 hours."""
    closed = phase.accepting()
    if closed:
        raise UploadError(f"{closed}: submissions are not accepted now", status=403)
    limit, used = quota(session, task, phase, team)
    if used >= limit:
        raise UploadError(f"team {team.name!r} has used its {limit} submission(s) per 24 h in phase "
                          f"{phase.slug!r}", status=429)


def quota(session: Session, task: Task, phase: Phase, team: Team) -> tuple[int, int]:
    """(submissions allowed per 24 h, used in the last 24 h) for ``team`` in ``phase``. The phase's
    organizer setting overrides task.yaml; refused intakes (failed) do not count."""
    limit = phase.submission_limit if phase.submission_limit is not None else \
        spec_of(task).phase(phase.slug).submission_limit
    since = utcnow() - dt.timedelta(days=1)
    subs = session.scalars(select(Submission).where(
        Submission.phase_id == phase.id, Submission.team_id == team.id, Submission.created_at >= since,
        Submission.status != SubmissionStatus.FAILED)).all()
    used = sum(not _not_charged(sub) for sub in subs)
    return limit, used


# Evaluation errors that mean the platform, not the submission, failed (see arena/runner/jobs.py).
PLATFORM_FAILURES = ("gave up after", "the smoke case could not be run", "this worker has none")


def _not_charged(sub: Submission) -> bool:
    """A submission whose latest evaluation was cancelled, or failed because of the platform (workers kept
    dying, the engine could not start the container, no GPU), does not use the team's quota."""
    ev = sub.latest_evaluation
    if ev is None:
        return False
    if ev.status == EvaluationStatus.CANCELLED:
        return True
    return ev.status == EvaluationStatus.FAILED and any(m in (ev.error or "") for m in PLATFORM_FAILURES)


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


def create_submission(session: Session, task_slug: str, phase_slug: str, user: User, upload: StoredUpload,
                      upload_name: str | None = None, label: str | None = None,
                      settings: Settings | None = None) -> Submission:
    """Check and record an uploaded submission (status ``uploaded``); the caller queues its intake.

    With ``settings``, the archive is validated now (see :func:`check_archive`); a refusal raises
    UploadError and the caller removes the upload, so nothing is stored.
    """
    task, phase = find_task_phase(session, task_slug, phase_slug)
    if user.team is None:
        raise UploadError(f"user {user.name!r} is in no team; add them to one first", status=403)
    check_quota(session, task, phase, user.team)
    info = check_archive(session, settings, phase, user.team, upload.path) if settings is not None else None
    sub = Submission(task=task, phase=phase, team=user.team, user=user, label=label,
                     status=SubmissionStatus.UPLOADED, upload_name=upload_name, upload_path=str(upload.path),
                     upload_sha256=upload.sha256, upload_bytes=upload.size,
                     image_id=info.image_id if info else None, image_user=info.user if info else None,
                     image_bytes=info.uncompressed_bytes if info else None)
    session.add(sub)
    session.flush()
    return sub
