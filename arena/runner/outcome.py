"""What running one case gave: the outcome every worker records (local ones and site workers alike).

Kept apart from arena.runner.evaluate (which needs the docker SDK) so that the web process, which records
site workers' outcomes, can build one without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arena.runner.failures import Failure


@dataclass
class CaseOutcome:
    ok: bool
    error: str | None = None
    failure: Failure | None = None
    exit_code: int | None = None
    runtime_s: float | None = None
    log_tail: str = ""
    output_path: str | None = None
    scores: dict[int, dict[str, float | None]] = field(default_factory=dict)
    stats: dict[str, float | int | None] = field(default_factory=dict)  # cpu_s, peak_memory_mb, ... (CaseResult columns)
