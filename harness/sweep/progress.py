"""A sweep's progress as a person reads it: one line per trial, with its phase, elapsed time and time left.

Trials report :class:`~harness.trial.progress.Progress` events among their metrics; :class:`ProgressView`,
a Ray Tune callback in the driver, reads them back and renders one line per trial: a table updated in
place where stdout is a terminal (rich's ``Live``), plain timestamped lines otherwise, at most one per
trial every ``interval`` seconds unless its phase changes. The time left is the current phase's rest,
extrapolated from how far into it the trial is, plus the phases still to come as long as they took
trials of the same model that already finished (a ``≥`` says some phase to come has no such measure yet).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from harness.trial.progress import Progress
from harness.trial.spec import TrialSpec

WORK_PHASES = ("collecting", "training", "diagnostics", "evaluating")  # the order a trial goes through them
PLAIN_INTERVAL = 10.0  # seconds between plain lines of one trial in one phase


def short_labels(trials: list[TrialSpec]) -> dict[str, str]:
    """Trial id -> ``task/model/s<seed>`` (with the variant, and the id's digest where that is still ambiguous)."""
    base = {
        t.trial_id: f"{t.task.name}/{t.model.name}/s{t.seed}" + (f"/{t.variant}" if t.variant else "") for t in trials
    }
    counts = Counter(base.values())
    return {
        trial_id: label if counts[label] == 1 else f"{label}/{trial_id.rsplit('-', 1)[-1][:6]}"
        for trial_id, label in base.items()
    }


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class TrialState:
    """One trial as the driver last heard of it."""

    label: str
    model: str
    started: float | None = None  # monotonic seconds; None while pending
    progress: Progress | None = None
    phase_started: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # how long each finished phase took
    finished: float | None = None
    success_rate: float | None = None

    @property
    def phase(self) -> str:
        return self.progress.phase if self.progress is not None else ("pending" if self.started is None else "starting")

    def update(self, progress: Progress, now: float) -> bool:
        """Take ``progress``; returns whether the phase (or the condition evaluated) changed."""
        if self.started is None:
            self.started = self.phase_started = now
        previous = self.progress
        changed = previous is None or (previous.phase, previous.condition) != (progress.phase, progress.condition)
        if previous is None or previous.phase != progress.phase:
            if previous is not None:
                self.phase_seconds[previous.phase] = now - self.phase_started
            self.phase_started = now
        if progress.phase in ("done", "failed"):
            self.finished = now
        self.progress = progress
        return changed

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or now) - self.started

    def time_left(self, now: float, typical: dict[str, float] | None) -> tuple[float | None, bool]:
        """Seconds left and whether that is only a lower bound; ``typical`` holds phase lengths of finished trials
        of the same model (None: no such trial yet). ``(None, True)`` when nothing can be said yet."""
        progress = self.progress
        if progress is None or progress.phase not in WORK_PHASES:
            return (0.0, False) if self.finished is not None else (None, True)
        fraction = progress.fraction
        in_phase = now - self.phase_started
        current = in_phase * (1 - fraction) / fraction if fraction else None
        later = WORK_PHASES[WORK_PHASES.index(progress.phase) + 1 :]
        known = [typical[phase] for phase in later if typical is not None and phase in typical]
        if current is None and not known:
            return None, True
        return (current or 0.0) + sum(known), current is None or len(known) < len(later)

    def describe(self) -> str:
        """What the trial is doing, e.g. ``training 120/400 loss 0.532``."""
        progress = self.progress
        if progress is None:
            return self.phase
        if progress.phase == "training":
            loss = f" loss {progress.loss:.4g}" if progress.loss is not None else ""
            return f"training {progress.step}/{progress.steps}{loss}"
        if progress.phase == "evaluating":
            which = f" ({progress.condition_index + 1}/{progress.conditions})" if progress.conditions else ""
            return f"evaluating {progress.condition}{which}: cases {progress.cases_done}/{progress.cases}"
        if progress.phase == "collecting":
            return "collecting data"
        if progress.phase == "diagnostics":
            return "diagnostics (probe, surprise)"
        if progress.phase == "done":
            return "done" + (f", success {self.success_rate:.2f}" if self.success_rate is not None else "")
        return f"failed: {progress.error}"


class ProgressView:
    """The Ray Tune callback that renders trials' progress (subclassed from ``tune.Callback`` by :func:`view`)."""

    def __init__(
        self,
        trials: list[TrialSpec],
        pending: list[str],
        live: bool | None = None,
        stream: IO[str] | None = None,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        self.labels = short_labels(trials)
        self.models = {t.trial_id: t.model.name for t in trials}
        self.pending = pending  # trial ids, shown as pending until they start
        self.live_requested = live
        self.stream = stream
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self.states: dict[str, TrialState] = {}  # by Tune's trial id
        self.waiting = {trial_id: TrialState(self.labels[trial_id], self.models[trial_id]) for trial_id in self.pending}
        self.finished: dict[str, list[dict[str, float]]] = {}  # model -> phase lengths of its finished trials
        self.printed: dict[str, float] = {}
        self.held: dict[str, str] = {}  # the last line of a trial's phase not yet printed
        self.began = time.monotonic()
        self._live = None
        self._handlers: list[tuple[logging.StreamHandler, IO[str]]] = []
        self._searched = 0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the run config
        state = dict(self.__dict__, _live=None, _handlers=[], stream=None)
        return state

    # --- Tune's callback hooks -----------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._reset()
        out = self.stream or sys.stdout
        from rich.console import Console

        console = Console(file=out)
        live = self.live_requested if self.live_requested is not None else console.is_terminal
        if live and not console.is_dumb_terminal:
            from rich.live import Live

            self._live = Live(get_renderable=self._table, console=console, refresh_per_second=2, transient=False)
            self._live.start()
            self._route_logging()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._state(trial, time.monotonic())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        progress = Progress.from_metrics(result)
        if progress is None:
            return
        now = time.monotonic()
        state = self._state(trial, now)
        if "success_rate" in result and progress.phase == "done":
            state.success_rate = float(result["success_rate"])
        changed = state.update(progress, now)
        if progress.phase in ("done", "failed"):
            self._remember(state)
        self._emit(trial.trial_id, state, now, changed)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        now = time.monotonic()
        state = self._state(trial, now)
        if state.finished is None:  # ended without a final event (e.g. the trainable returned early)
            state.update(Progress("done"), now)
            self._remember(state)
            self._emit(trial.trial_id, state, now, True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        now = time.monotonic()
        state = self._state(trial, now)
        state.update(Progress("failed", error=_recorded_error(trial)), now)
        self._emit(trial.trial_id, state, now, True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()
        print(self.summary(), file=self._out, flush=True)

    # --- rendering -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the in-place display (its last frame stays on the terminal); safe to call twice."""
        if self._live is not None:
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._live.stop()
            self._live = None

    def summary(self) -> str:
        """One line for the sweep, then one per failed trial naming why."""
        states = list(self.states.values())
        failed = [s for s in states if s.phase == "failed"]
        done = [s for s in states if s.phase == "done"]
        lines = [
            f"progress: {len(done)} trial(s) done, {len(failed)} failed, "
            f"{len(states) - len(done) - len(failed) + len(self.waiting)} not finished, in "
            f"{format_seconds(time.monotonic() - self.began)}"
        ]
        lines += [f"  failed {s.label}: {s.progress.error}" for s in failed]
        return "\n".join(lines)

    @property
    def _out(self) -> IO[str]:
        return self.stream or sys.stdout

    def _state(self, trial: Any, now: float) -> TrialState:
        if trial.trial_id not in self.states:
            base = trial.config["trial_id"]
            state = self.waiting.pop(base, None)
            if state is None:
                label = self.labels.get(base, base)
                if "searched" in trial.config:
                    self._searched += 1
                    label = f"{label}#{self._searched}"
                state = TrialState(label, self.models.get(base, base))
            state.started = state.phase_started = now
            self.states[trial.trial_id] = state
        return self.states[trial.trial_id]

    def _remember(self, state: TrialState) -> None:
        if state.phase == "done":
            self.finished.setdefault(state.model, []).append(
                {phase: state.phase_seconds.get(phase, 0.0) for phase in WORK_PHASES}
            )

    def _typical(self, model: str) -> dict[str, float] | None:
        runs = self.finished.get(model)
        if not runs:
            return None
        return {phase: sum(run[phase] for run in runs) / len(runs) for phase in WORK_PHASES}

    def _timing(self, state: TrialState, now: float) -> tuple[str, str]:
        elapsed = format_seconds(state.elapsed(now)) if state.started is not None else ""
        if state.finished is not None or state.started is None:
            return elapsed, ""
        left, lower = state.time_left(now, self._typical(state.model))
        if left is None:
            return elapsed, "?"
        return elapsed, ("≥" if lower else "~") + format_seconds(left)

    def _emit(self, key: str, state: TrialState, now: float, changed: bool) -> None:
        """A plain line for ``state``: at once when its phase changed, else at most one per ``interval``. An update
        held back is printed when its phase ends, so each phase's last figures (e.g. the final loss) are seen."""
        if self._live is not None:
            return  # the table redraws itself
        elapsed, left = self._timing(state, now)
        width = max(len(s.label) for s in [*self.states.values(), *self.waiting.values()])
        timing = f"{elapsed} elapsed" + (f", {left} left" if left else "")
        line = f"{time.strftime('%H:%M:%S')}  {state.label:<{width}}  {state.describe():<44}  {timing}".rstrip()
        if not changed and now - self.printed.get(key, -float("inf")) < self.interval:
            self.held[key] = line
            return
        if changed and key in self.held:
            print(self.held[key], file=self._out)
        self.held.pop(key, None)
        self.printed[key] = now
        print(line, file=self._out, flush=True)

    def _table(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        states = [*self.states.values(), *self.waiting.values()]
        counts = Counter("pending" if s.started is None else s.phase for s in states)
        running = len(states) - counts["pending"] - counts["done"] - counts["failed"]
        title = (
            f"{counts['done']} done, {counts['failed']} failed, {running} running, {counts['pending']} pending"
            f" · {format_seconds(now - self.began)}"
        )
        table = Table(box=None, pad_edge=False)
        for column in ("trial", "phase", "elapsed", "left"):
            table.add_column(column, no_wrap=True, justify="right" if column in ("elapsed", "left") else "left")
        for state in states:
            style = {"failed": "red", "done": "green", "pending": "dim"}.get(state.phase)
            table.add_row(state.label, state.describe(), *self._timing(state, now), style=style)
        return Group(Text(title, style="italic", no_wrap=True), table)

    def _route_logging(self) -> None:
        """Point the driver's log handlers at the live display's stderr, so log lines print above it."""
        for logger in (logging.getLogger(), logging.getLogger("ray")):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__):
                    self._handlers.append((handler, handler.stream))
                    handler.setStream(sys.stderr)


def _recorded_error(trial: Any) -> str:
    """The last line of the error Ray recorded for a trial (its exception), or a placeholder."""
    try:
        text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - a missing error file must not stop the display
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "the trial's worker failed (see the Ray logs)"


def view(
    trials: list[TrialSpec], pending: list[str], live: bool | None = None, stream: IO[str] | None = None
) -> ProgressView:
    """A :class:`ProgressView` that Ray Tune accepts as a callback (``live``: None decides by the terminal)."""
    from ray import tune

    class TuneProgressView(ProgressView, tune.Callback):
        pass

    return TuneProgressView(trials, pending, live, stream)
