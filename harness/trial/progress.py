"""What a running trial is doing, as a typed event the trial reports and a sweep driver renders.

A trial reports :class:`Progress` through the same ``report(metrics)`` callable that carries its
training records, flattened to ``progress/<field>`` metrics (:meth:`Progress.metrics`), so a Ray
Tune callback in the driver reads it back with :meth:`Progress.from_metrics` and a trial run
without Ray needs nothing new. :class:`ProgressThrottle` keeps a trial from sending more than one
pure progress event every few seconds: each report is a Tune iteration.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["collecting", "training", "diagnostics", "evaluating", "done", "failed"]
PHASES: tuple[Phase, ...] = ("collecting", "training", "diagnostics", "evaluating", "done", "failed")
PREFIX = "progress/"


@dataclass(frozen=True)
class Progress:
    """One step of a trial: its phase and the counters that say how far into the phase it is."""

    phase: Phase
    fraction: float | None = None  # of this phase done, in [0, 1] (None: not measurable)
    step: int | None = None  # training: optimisation steps done of ``steps``
    steps: int | None = None
    loss: float | None = None  # training: mean loss of the last logging interval
    condition: str | None = None  # evaluating: the condition running, ``condition_index`` of ``conditions``
    condition_index: int | None = None  # 0-based
    conditions: int | None = None
    cases_done: int | None = None  # evaluating: episodes finished of this condition's ``cases``
    cases: int | None = None
    error: str | None = None  # failed: one line

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {self.phase!r}")

    def metrics(self) -> dict[str, Any]:
        """The event as flat ``progress/<field>`` metrics (fields left unset are left out)."""
        return {PREFIX + k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> Progress | None:
        """The event :meth:`metrics` flattened into ``metrics``, or None when they hold none."""
        if PREFIX + "phase" not in metrics:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k.removeprefix(PREFIX): v for k, v in metrics.items() if k.removeprefix(PREFIX) in names})

    @staticmethod
    def only_progress(metrics: dict[str, Any]) -> bool:
        """Whether ``metrics`` carry nothing beside a progress event (no training record, no summary)."""
        return all(key.startswith(PREFIX) for key in metrics)


class ProgressThrottle:
    """Admits a pure progress event when its phase or condition changed, or ``interval`` seconds passed.

    Metrics that carry more than progress (training records, condition summaries) are always admitted:
    they are the curves a tracker draws.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._last: tuple[str, str | None] | None = None
        self._sent = -float("inf")

    def admit(self, metrics: dict[str, Any]) -> bool:
        progress = Progress.from_metrics(metrics)
        now = time.monotonic()
        key = (progress.phase, progress.condition) if progress is not None else None
        if progress is None or not Progress.only_progress(metrics) or key != self._last:
            admitted = True
        else:
            admitted = now - self._sent >= self.interval
        if admitted:
            self._last = key if key is not None else self._last
            self._sent = now
        return admitted
