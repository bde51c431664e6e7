"""Status lifecycles of submissions and evaluations, and the transitions allowed between them.

A submission is ``uploaded`` until its tarball has been checked and loaded into the engine
(``validated``) or refused (``failed``, with a reason). Each (re-)run of a validated submission is a
new evaluation: ``queued → running (case i/N) → scoring → succeeded | failed | cancelled``.
Results are never overwritten; a re-run adds an evaluation.
"""

from __future__ import annotations

import enum


class SubmissionStatus(str, enum.Enum):
    UPLOADED = "uploaded"
    VALIDATED = "validated"
    FAILED = "failed"


class EvaluationStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SCORING = "scoring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED, EvaluationStatus.CANCELLED)


class CaseStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_SUBMISSION_NEXT: dict[SubmissionStatus, set[SubmissionStatus]] = {
    SubmissionStatus.UPLOADED: {SubmissionStatus.VALIDATED, SubmissionStatus.FAILED},
    SubmissionStatus.VALIDATED: set(),
    SubmissionStatus.FAILED: set(),
}

_EVALUATION_NEXT: dict[EvaluationStatus, set[EvaluationStatus]] = {
    EvaluationStatus.QUEUED: {EvaluationStatus.RUNNING, EvaluationStatus.FAILED, EvaluationStatus.CANCELLED},
    # running|scoring → queued: re-queued after its worker died or went silent (finished cases are kept)
    EvaluationStatus.RUNNING: {EvaluationStatus.SCORING, EvaluationStatus.FAILED, EvaluationStatus.CANCELLED,
                               EvaluationStatus.QUEUED},
    EvaluationStatus.SCORING: {EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED, EvaluationStatus.QUEUED},
    EvaluationStatus.SUCCEEDED: set(),
    EvaluationStatus.FAILED: set(),
    EvaluationStatus.CANCELLED: set(),
}


class IllegalTransition(ValueError):
    """Raised when a status change is not allowed by the lifecycle."""


def check_submission_transition(old: SubmissionStatus, new: SubmissionStatus) -> None:
    if new not in _SUBMISSION_NEXT[SubmissionStatus(old)]:
        raise IllegalTransition(f"submission cannot go from {SubmissionStatus(old).value} to {new.value}")


def check_evaluation_transition(old: EvaluationStatus, new: EvaluationStatus) -> None:
    if new not in _EVALUATION_NEXT[EvaluationStatus(old)]:
        raise IllegalTransition(f"evaluation cannot go from {EvaluationStatus(old).value} to {new.value}")
