"""A trial's parts, built once from its spec: task, data, cases, model and controller.

:func:`build_trial` is the one place a spec becomes the things a trial evaluates with;
the trial itself, the stress search, the surprise and rarity commands, replay and
``--from-row`` all call it, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.eval.cases import Case, make_cases
from harness.eval.controllers import Controller, ModelController, reference_controller
from harness.eval.protocol import EvalProtocol
from harness.trial.checkpoints import load_or_train
from harness.trial.progress import Progress
from harness.trial.spec import TrialSpec
from harness.trial.training import TrainStats
from models.world_model import WorldModel
from tasks.base import Task, make_task
from tasks.data import Backend, Episodes, WindowDataset, collect
from tasks.swm_data import open_converted

HELDOUT_SEED_OFFSET = 1_000_003  # held-out episodes come from a different collection seed
Report = Callable[[dict[str, Any]], None]


@dataclass
class TrialData:
    """The task, its resolved protocol, and the two collections a trial uses."""

    task: Task
    protocol: EvalProtocol  # history and frameskip resolved against the task
    train: Episodes  # what models train on
    heldout: Episodes  # a separate collection: held-out cases and every diagnostic come from it

    @property
    def case_source(self) -> Episodes:
        """Where evaluation cases are drawn: held-out episodes, or the training split to reproduce a paper."""
        return self.heldout if self.protocol.split == "heldout" else self.train


@dataclass
class TrialParts(TrialData):
    """Everything a trial evaluates with."""

    cases: list[Case]
    solved_starts_resampled: int
    controller: Controller
    model: WorldModel | None = None  # None for reference controllers
    windows: WindowDataset | None = None  # the training windows (None for reference controllers)
    train_stats: TrainStats | None = None


def trial_data(spec: TrialSpec, backend: Backend = "local", progress: bool = False) -> TrialData:
    """The spec's task and its training and held-out collections (from the dataset cache, else collected:
    in ``data.workers`` local processes, or as Ray tasks over the cluster with ``backend="ray"``)."""
    task = make_task(
        spec.task.name, image_size=spec.task.image_size, success_test=spec.protocol.success_test, **spec.task.options
    )  # the protocol's success test judges; the data do not depend on it
    protocol = spec.protocol.resolved(task.default_history, task.default_frameskip, task.success_test)
    data = spec.data

    def dataset(episodes: int, seed: int) -> Episodes:
        return collect(
            task, data.policy, episodes, data.steps, seed, data.noise, workers=data.workers, progress=progress,
            backend=backend,
        )  # fmt: skip

    # Converted data (tasks/swm_data.py) replace the training collection; held-out episodes are the task's own.
    train = open_converted(data.source, task) if data.source is not None else dataset(data.episodes, data.seed)
    heldout = dataset(data.heldout_episodes, data.seed + HELDOUT_SEED_OFFSET)
    return TrialData(task, protocol, train, heldout)


def build_trial(
    spec: TrialSpec,
    device: torch.device | str = "cpu",
    world_size: int = 1,
    report: Report | None = None,
    controller: str | None = None,
) -> TrialParts:
    """The spec's parts; a zoo model is loaded from the checkpoint cache, else trained (over ``world_size``
    processes with DDP when above 1) and cached. ``controller`` (``random``, ``oracle``) replaces the spec's
    model, e.g. to replay a case with a reference controller."""
    device = torch.device(device)
    torch.manual_seed(spec.seed)  # torch draws while the parts are built follow the trial seed (load_or_train reseeds)
    if report is not None:
        report(Progress("collecting").metrics())
    data = trial_data(spec)
    task, protocol = data.task, data.protocol
    cases, resampled = make_cases(task, data.case_source, protocol)
    name = controller or spec.model.name
    reference = reference_controller(name)
    if reference is not None:
        chosen = reference(task, spec.planner, protocol.frameskip, spec.seed)
        return TrialParts(task, protocol, data.train, data.heldout, cases, resampled, chosen)
    windows = WindowDataset(data.train, num_frames=spec.train.num_frames, frameskip=protocol.frameskip)
    overrides = {"history": protocol.history, **spec.model.overrides}  # planning context = training context
    reported = None
    if report is not None:
        report(Progress("training", fraction=0.0, step=0, steps=spec.train.steps).metrics())
        reported = TrainingRecords(report, spec.train.steps)
    model, stats = load_or_train(
        name, spec.model.size, task.image_size, protocol.frameskip * task.action_dim, overrides, windows,
        data.train.key, spec.train, spec.seed, device, log_fn=reported, world_size=world_size,
    )  # fmt: skip
    if reported is not None and reported.calls == 0:  # a cached checkpoint: the records of the training that made it
        for record in stats.history:
            reported(record)
    chosen = ModelController(name, model, spec.planner, spec.seed, device, scaler=windows.scaler)
    return TrialParts(task, protocol, data.train, data.heldout, cases, resampled, chosen, model, windows, stats)


class TrainingRecords:
    """Training's ``log_fn``: each record (every loss term, lr, throughput, latent diagnostics) goes to
    ``report`` as ``train/<name>``, with the trial's progress (step k of ``steps`` and the loss)."""

    def __init__(self, report: Report, steps: int) -> None:
        self.report, self.steps, self.calls = report, steps, 0

    def __call__(self, record: dict[str, float]) -> None:
        self.calls += 1
        step = int(record["step"])
        progress = Progress("training", fraction=step / self.steps, step=step, steps=self.steps, loss=record["loss"])
        self.report({f"train/{name}": value for name, value in record.items()} | progress.metrics())
