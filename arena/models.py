"""The ORM (SQLAlchemy 2, typed). Schema changes go through Alembic (arena/migrations)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, Float, ForeignKey, Integer, String, Text, UniqueConstraint, Column, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from arena.lifecycle import (
    CaseStatus,
    EvaluationStatus,
    SubmissionStatus,
    check_evaluation_transition,
    check_submission_transition,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


def _enum(e: type) -> Enum:
    return Enum(e, native_enum=False, length=20, values_callable=lambda x: [m.value for m in x],
                validate_strings=True)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_reference: Mapped[bool] = mapped_column(default=False)  # bundled reference models: badge "reference"
    invite_code: Mapped[str | None] = mapped_column(String(40), unique=True)  # members join with it
    # Bumped by every quota decision of the team (migration 0006): the UPDATE is the lock that makes
    # check-and-reserve one step (row lock on PostgreSQL, the write lock on SQLite); see intake.reserve_slot.
    quota_serial: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    members: Mapped[list[User]] = relationship(back_populates="team")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(200))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    is_admin: Mapped[bool] = mapped_column(default=False)  # global admin: every task, every page
    password_hash: Mapped[str | None] = mapped_column(String(255))  # werkzeug scrypt; None: API/CLI only
    # A one-time password set by an administrator (migration 0005): it works until then, and only to
    # choose a new password. None: the password is the user's own.
    password_expires_at: Mapped[dt.datetime | None] = mapped_column()
    # Part of every session and remember cookie (get_id); bumped on sign-out, password change and disable,
    # which ends every session of the user on every browser (migration 0005).
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    disabled_at: Mapped[dt.datetime | None] = mapped_column()  # an administrator disabled the account
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    team: Mapped[Team | None] = relationship(back_populates="members")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", order_by="ApiToken.id")

    # Flask-Login's user protocol
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        """A disabled user cannot sign in, and their sessions and tokens no longer work."""
        return self.disabled_at is None

    def get_id(self) -> str:
        """What sessions and remember cookies hold: ``"<id>:<session generation>"``."""
        return f"{self.id}:{self.session_generation}"


class ApiToken(Base):
    """A personal API token: only its sha256 is stored; shown once at creation; revocable."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    user: Mapped[User] = relationship(back_populates="tokens")


class AuditEvent(Base):
    """Who did what to which object (organizer actions, sign-ins, token changes)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[User | None] = relationship()


class RateCounter(Base):
    """Attempts counted for a rate limit (sign-ins, sign-ups, uploads), shared by every web worker: one row
    per key and fixed window, incremented in a single INSERT … ON CONFLICT DO UPDATE (migration 0005)."""

    __tablename__ = "rate_counters"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(index=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


task_organizers = Table(
    "task_organizers",
    Base.metadata,
    Column("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)


phase_cases = Table(
    "phase_cases",
    Base.metadata,
    Column("phase_id", ForeignKey("phases.id", ondelete="CASCADE"), primary_key=True),
    Column("case_id", ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    spec_path: Mapped[str] = mapped_column(String(500))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # snapshot of the validated spec
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    phases: Mapped[list[Phase]] = relationship(back_populates="task", order_by="Phase.id")
    cases: Mapped[list[Case]] = relationship(back_populates="task", order_by="Case.key")
    organizers: Mapped[list[User]] = relationship(secondary=task_organizers, order_by="User.name")


PHASE_VISIBILITY = ("public", "hidden", "private")
"""public: anyone sees the board; hidden: only organizers see the board, teams see their own scores;
private: scores hidden even from the team until the phase's reveal time."""


class Phase(Base):
    __tablename__ = "phases"
    __table_args__ = (UniqueConstraint("task_id", "slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    slug: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(200))
    # Organizer settings (migration 0004); None: no restriction / the task.yaml's value
    opens_at: Mapped[dt.datetime | None] = mapped_column()  # submissions accepted from (UTC)
    closes_at: Mapped[dt.datetime | None] = mapped_column()  # ... until (UTC)
    submission_limit: Mapped[int | None] = mapped_column(Integer)  # per team per 24 h; overrides task.yaml
    visibility: Mapped[str] = mapped_column(String(20), default="public", server_default="public")
    frozen_at: Mapped[dt.datetime | None] = mapped_column()  # board frozen (snapshot shown) from
    reveal_at: Mapped[dt.datetime | None] = mapped_column()  # live board and hidden scores shown from
    frozen_board: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # rows when the freeze began
    # migration 0010: None: local workers serve the phase (cases on the server); set: only that site's
    # workers do (the cases stay at the site; the server holds their keys and checksums)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"))
    task: Mapped[Task] = relationship(back_populates="phases")
    site: Mapped[Site | None] = relationship()
    cases: Mapped[list[Case]] = relationship(secondary=phase_cases, order_by="Case.key")

    def accepting(self, now: dt.datetime | None = None) -> str | None:
        """None when submissions are accepted now, else why not."""
        now = now or utcnow()
        if self.opens_at and now < self.opens_at:
            return f"phase {self.slug!r} opens at {self.opens_at:%Y-%m-%d %H:%M} UTC"
        if self.closes_at and now >= self.closes_at:
            return f"phase {self.slug!r} closed at {self.closes_at:%Y-%m-%d %H:%M} UTC"
        return None

    def revealed(self, now: dt.datetime | None = None) -> bool:
        return self.reveal_at is not None and (now or utcnow()) >= self.reveal_at

    def frozen(self, now: dt.datetime | None = None) -> bool:
        now = now or utcnow()
        return self.frozen_at is not None and now >= self.frozen_at and not self.revealed(now)

    def board_public(self, now: dt.datetime | None = None) -> bool:
        """Anyone (viewers without an account included) may read the board."""
        return self.visibility == "public" or self.revealed(now)

    def scores_hidden_from_teams(self, now: dt.datetime | None = None) -> bool:
        return self.visibility == "private" and not self.revealed(now)


class Site(Base):
    """A data owner's site (migration 0010): its workers hold the hidden cases of the phases assigned to
    it and send back only scores (arena.site)."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    tokens: Mapped[list[WorkerToken]] = relationship(back_populates="site", order_by="WorkerToken.id")


class WorkerToken(Base):
    """A site worker's token (migration 0010): only its sha256 is stored; shown once; revocable. Its scope:
    its site and the phases in ``phase_ids``."""

    __tablename__ = "worker_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    phase_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column()
    site: Mapped[Site] = relationship(back_populates="tokens")


class QuotaReservation(Base):
    """A submission slot held by an upload in progress (migration 0006): counted by the quota like a
    submission from before the body is streamed until the upload becomes a submission or is refused."""

    __tablename__ = "quota_reservations"
    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)  # refreshed while bytes arrive


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("task_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    key: Mapped[str] = mapped_column(String(100))
    image_path: Mapped[str] = mapped_column(String(500))
    reference_path: Mapped[str] = mapped_column(String(500))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task: Mapped[Task] = relationship(back_populates="cases")


class ModelArchive(Base):
    """A team's model tarball (checked: regular files and directories only), stored once per content."""

    __tablename__ = "model_archives"
    __table_args__ = (UniqueConstraint("team_id", "sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))  # of the archive file as uploaded
    path: Mapped[str] = mapped_column(String(500))
    bytes: Mapped[int] = mapped_column(BigInteger)
    unpacked_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    team: Mapped[Team] = relationship()


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str | None] = mapped_column(String(200))  # free text: algorithm name / version
    # reference entries: trained on what, with which command (reference_models/<name>/provenance.json)
    provenance: Mapped[str | None] = mapped_column(Text)
    status: Mapped[SubmissionStatus] = mapped_column(_enum(SubmissionStatus), default=SubmissionStatus.UPLOADED)
    error: Mapped[str | None] = mapped_column(Text)
    upload_name: Mapped[str | None] = mapped_column(String(300))
    upload_path: Mapped[str | None] = mapped_column(String(500))
    upload_sha256: Mapped[str | None] = mapped_column(String(64))
    upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    image_id: Mapped[str | None] = mapped_column(String(80))  # sha256:... of the image config
    image_tag: Mapped[str | None] = mapped_column(String(200))  # arena/<instance>/submission:<id>
    image_user: Mapped[str | None] = mapped_column(String(100))  # the image's configured USER ("" = root)
    image_bytes: Mapped[int | None] = mapped_column(BigInteger)  # uncompressed size of the image archive
    # the model tarball extracted read-only at /opt/ml/model (grand-challenge's separate model upload)
    model_archive_id: Mapped[int | None] = mapped_column(ForeignKey("model_archives.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    task: Mapped[Task] = relationship()
    phase: Mapped[Phase] = relationship()
    team: Mapped[Team] = relationship()
    user: Mapped[User | None] = relationship()
    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="submission", order_by="Evaluation.id")
    model_archive: Mapped[ModelArchive | None] = relationship()

    def set_status(self, new: SubmissionStatus, error: str | None = None) -> None:
        check_submission_transition(self.status, new)
        self.status = new
        if error is not None:
            self.error = error

    @property
    def latest_evaluation(self) -> Evaluation | None:
        return self.evaluations[-1] if self.evaluations else None

    @property
    def display_status(self) -> str:
        """What a participant sees: the intake status, or the latest evaluation's."""
        ev = self.latest_evaluation
        if self.status != SubmissionStatus.VALIDATED or ev is None:
            return self.status.value
        if ev.status == EvaluationStatus.RUNNING:
            return f"running (case {min(ev.cases_done + 1, ev.cases_total)}/{ev.cases_total})"
        return ev.status.value


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    status: Mapped[EvaluationStatus] = mapped_column(_enum(EvaluationStatus), default=EvaluationStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    fault: Mapped[str | None] = mapped_column(String(20))  # a failed one: arena.runner.failures.Fault value
    cases_total: Mapped[int] = mapped_column(default=0)
    cases_done: Mapped[int] = mapped_column(default=0)
    job_id: Mapped[str | None] = mapped_column(String(100))
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    submission: Mapped[Submission] = relationship(back_populates="evaluations")
    case_results: Mapped[list[CaseResult]] = relationship(back_populates="evaluation", order_by="CaseResult.id")

    def set_status(self, new: EvaluationStatus, error: str | None = None, fault: str | None = None) -> None:
        """Move to ``new`` (a legal transition only); ``fault`` (a Fault value) says whose fault a failure is."""
        check_evaluation_transition(self.status, new)
        self.status = new
        if error is not None:
            self.error = error
        self.fault = getattr(fault, "value", fault) if new == EvaluationStatus.FAILED else None
        if new == EvaluationStatus.RUNNING:
            self.started_at = utcnow()
        if new.finished:
            self.finished_at = utcnow()


class CaseResult(Base):
    __tablename__ = "case_results"
    __table_args__ = (UniqueConstraint("evaluation_id", "case_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    status: Mapped[CaseStatus] = mapped_column(_enum(CaseStatus))
    error: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    runtime_s: Mapped[float | None] = mapped_column(Float)  # container wall time, seconds
    log_tail: Mapped[str | None] = mapped_column(Text)
    output_path: Mapped[str | None] = mapped_column(String(500))
    failure: Mapped[str | None] = mapped_column(String(30))  # arena.runner.failures.Failure value
    cpu_s: Mapped[float | None] = mapped_column(Float)  # CPU time used by the container, seconds
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)  # peak RSS+cache of the container, MB
    pids_peak: Mapped[int | None] = mapped_column(Integer)
    gpu_memory_peak_mb: Mapped[float | None] = mapped_column(Float)  # None: no GPU metrics on this worker
    gpu_utilization_mean: Mapped[float | None] = mapped_column(Float)  # percent
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    evaluation: Mapped[Evaluation] = relationship(back_populates="case_results")
    case: Mapped[Case] = relationship()
    metrics: Mapped[list[MetricValue]] = relationship(back_populates="case_result", order_by="MetricValue.id",
                                                      cascade="all, delete-orphan")


class MetricValue(Base):
    __tablename__ = "metric_values"
    __table_args__ = (UniqueConstraint("case_result_id", "label", "metric"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    case_result_id: Mapped[int] = mapped_column(ForeignKey("case_results.id", ondelete="CASCADE"))
    label: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(50))
    value: Mapped[float | None] = mapped_column(Float)  # None: excluded by the empty-mask policy
    case_result: Mapped[CaseResult] = relationship(back_populates="metrics")
