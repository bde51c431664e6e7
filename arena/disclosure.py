"""What a participant may learn about a run whose cases are hidden from them (issue 17, finding 2).

A phase hides its cases from participants when its task.yaml says ``show_case_results: false``, or while
a private phase waits for its reveal. The container still reads those cases, and everything it controls
can be made a function of them: its exit code (8 bits per case), its runtime and memory per case, its
failure mode, its logs. So in such a phase a participant is told, per evaluation, only

* its status (queued, running, scoring, succeeded, failed, cancelled; no "case i/N" while it runs),
* one coarse outcome (:data:`OUTCOMES`) and how many cases ended in each outcome,
* its total runtime to one significant digit (:func:`coarse`),

and never exit codes, per-case runtimes, memory or process counts, failure detail, error text or logs.
Organizers see everything. Boards of such phases show runtime and memory to one significant digit.
What is left (the counts, the total time, the scores the phase publishes) is listed in docs/security.md.
"""

from __future__ import annotations

from typing import Iterable

from arena.lifecycle import CaseStatus
from arena.runner.failures import Failure, Fault

SUCCEEDED = "succeeded"
PARTICIPANT_FAULT = "failed: participant fault"
PLATFORM_FAULT = "failed: platform fault"
TIMED_OUT = "timed out"
NOT_RUN = "not run"  # fail-fast skipped it after an earlier case failed
OUTCOMES = (SUCCEEDED, PARTICIPANT_FAULT, PLATFORM_FAULT, TIMED_OUT, NOT_RUN)
_TIMEOUTS = (Failure.TIMEOUT, Failure.EVALUATION_TIMEOUT)


def case_outcome(status: CaseStatus | str, failure: str | None) -> str:
    """The coarse outcome of one case from its status and failure class (a row without a class, from
    before failure classes were recorded, counts as the participant's)."""
    if CaseStatus(status) == CaseStatus.SUCCEEDED:
        return SUCCEEDED
    try:
        cls = Failure(failure)
    except ValueError:
        return PARTICIPANT_FAULT
    if cls in _TIMEOUTS:
        return TIMED_OUT
    if cls == Failure.SKIPPED:
        return NOT_RUN
    return PARTICIPANT_FAULT if cls.participant_fault else PLATFORM_FAULT


def outcome_counts(cases: Iterable[tuple[CaseStatus | str, str | None]]) -> dict[str, int]:
    """How many cases ended in each outcome (outcomes with no case left out), in :data:`OUTCOMES` order."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for status, failure in cases:
        counts[case_outcome(status, failure)] += 1
    return {k: n for k, n in counts.items() if n}


def failed_outcome(counts: dict[str, int], fault: str | None = None) -> str:
    """The outcome of a failed evaluation: the platform's fault when the runner recorded it so
    (``Evaluation.fault``, :class:`arena.runner.failures.Fault`); else from its cases' outcomes — the
    platform's when any case was, or when no case explains the failure (a worker died, the job broke),
    else a time-out, else the participant's fault."""
    if fault == Fault.PLATFORM.value or counts.get(PLATFORM_FAULT):
        return PLATFORM_FAULT
    if counts.get(TIMED_OUT):
        return TIMED_OUT
    if counts.get(PARTICIPANT_FAULT):
        return PARTICIPANT_FAULT
    return PLATFORM_FAULT


def coarse(value: float | None) -> float | None:
    """``value`` to one significant digit (0.37 → 0.4, 1234 → 1000): at most 9 values per power of ten,
    about 3 bits per decade a container could choose from. None and NaN stay None."""
    if value is None or value != value:
        return None
    if value <= 0:
        return 0.0
    return float(f"{value:.0e}")
