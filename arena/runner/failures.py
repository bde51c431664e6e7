"""Why a case failed, as a small closed set a participant and an organizer can act on."""

from __future__ import annotations

import enum


class Failure(str, enum.Enum):
    TIMEOUT = "timeout"  # the case's wall-clock limit passed; the container was killed
    EVALUATION_TIMEOUT = "evaluation-timeout"  # the whole evaluation's limit passed; remaining cases not run
    OUT_OF_MEMORY = "out-of-memory"  # the kernel OOM-killed a process (State.OOMKilled), whatever the exit code
    PIDS_EXHAUSTED = "pids-exhausted"  # the pids limit was hit (fork bomb, thread storm)
    OUTPUT_TOO_LARGE = "output-too-large"  # /output over its size, file-count or per-file cap
    NON_ZERO_EXIT = "non-zero-exit"  # the algorithm exited with an error code
    INVALID_OUTPUT = "invalid-output"  # missing file, wrong geometry, unexpected labels, bad JSON, ...
    ENGINE_ERROR = "engine-error"  # Docker could not create/start the container (not the algorithm's fault)
    NO_GPU = "no-gpu"  # the task needs a GPU this worker does not have
    SKIPPED = "skipped"  # not run: fail-fast after the smoke case failed

    @property
    def participant_fault(self) -> bool:
        return self not in (Failure.ENGINE_ERROR, Failure.NO_GPU)


class Fault(str, enum.Enum):
    """Whose fault a failed evaluation is, decided where the runner knows it (never from message text)."""

    PARTICIPANT = "participant"  # the submission's doing: counts against the team's quota
    PLATFORM = "platform"  # Arena's or its machines' (no GPU, engine errors, workers lost): not charged

    @classmethod
    def of_cases(cls, failures: list[Failure]) -> Fault:
        """A failed evaluation whose every failed case failed through the platform is the platform's fault."""
        return cls.PLATFORM if failures and not any(f.participant_fault for f in failures) else cls.PARTICIPANT
