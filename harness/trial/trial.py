"""One trial: spec -> parts (data, model, cases) -> every condition evaluated -> typed rows.

A plain function of a :class:`TrialSpec` that knows nothing of the sweep around it, so it
runs, and is tested, without Ray. :func:`execute_trial` adds what a sweep needs: a
failed trial becomes a ``failed`` row, and the rows are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from harness.eval.cases import case_fingerprint
from harness.eval.controllers import ModelController
from harness.eval.evaluation import EpisodeResult, EvaluationProgress, run_episodes, summarize_episodes
from harness.eval.probes import linear_probe
from harness.eval.protocol import EvalProtocol
from harness.eval.surprise import evaluate_surprise, surprise_by_event
from harness.report import results
from harness.report.results import ConditionRow, EpisodeRow
from harness.trial import provenance
from harness.trial.parts import Report, TrialParts, build_trial
from harness.trial.progress import Progress
from harness.trial.spec import TrialSpec
from tasks.base import task_class
from tasks.conditions import Condition
from tasks.data import WindowDataset

log = logging.getLogger(__name__)

PROBE_FRAMES = 5_000  # frames read from each of the training and held-out windows for the probe


def run_trial(
    spec: TrialSpec, device: torch.device | str = "cpu", world_size: int = 1, report: Report | None = None
) -> tuple[list[ConditionRow], list[EpisodeRow]]:
    """Run one trial; returns (condition rows, episode rows). Raises on any failure."""
    report = report or (lambda metrics: None)
    started = datetime.now(UTC)
    device = torch.device(device)
    provenance.reset_peak_memory(device)  # this trial's peak, whatever the process ran before
    for condition in spec.conditions:  # a factor the task lacks stops the trial before any data or training
        condition.check_task(task_class(spec.task.name))
    parts = build_trial(spec, device, world_size, report)
    if parts.model is not None and spec.diagnostics:
        report(Progress("diagnostics").metrics())
    measured = _model_fields(spec, parts, device)
    # The row names what ran: a zoo entry with a stand-in part says so (e.g. dino_wm[mae] without DINOv2 weights).
    entry = parts.model.entry_name(spec.model.name) if parts.model is not None else spec.model.name
    identity = _identity(spec, parts.protocol, device, parts.task.requires) | {"model": entry}
    cases = case_fingerprint(parts.task, parts.case_source.key, parts.cases)  # the same for every condition
    condition_rows, episode_rows = [], []
    for index, condition in enumerate(spec.conditions):
        evaluated = _evaluation_report(report, condition, index, len(spec.conditions))
        episodes = run_episodes(
            parts.controller, parts.task, parts.cases, parts.protocol, condition, on_progress=evaluated
        )
        summary = summarize_episodes(episodes)
        figures = {f"eval/{condition.name}/{name}": value for name, value in dataclasses.asdict(summary).items()}
        finished = EvaluationProgress(len(episodes), len(episodes), 0, 0, parts.protocol.budget)
        report(figures | _evaluating(condition, index, len(spec.conditions), finished).metrics())  # never throttled
        log.info("%s %s: success %.2f", spec.task.name, condition.name, summary.success_rate)
        condition_rows.append(
            ConditionRow(
                **identity,
                status="ok",
                condition=condition.name,
                axis=condition.axis,
                magnitude=condition.magnitude,
                **condition.params(),
                camera_kind=parts.task.camera_kind if condition.moves_camera else None,
                **dataclasses.asdict(summary),
                **measured,
                solved_starts_resampled=parts.solved_starts_resampled,
                dataset_key=parts.train.key,
                data_policy=f"{spec.data.policy}(noise={spec.data.noise:g})",
                data_policy_success=parts.train.info.get("policy_success_rate"),
                case_split=parts.protocol.split,
                case_fingerprint=cases,
                encoder=parts.controller.describe(),
                started_at=started,
                finished_at=datetime.now(UTC),
            )
        )
        episode_rows += _episode_rows(spec, entry, condition, parts.protocol, episodes)
    peak = provenance.peak_memory_mb(device)
    return [dataclasses.replace(row, peak_mem_mb=peak) for row in condition_rows], episode_rows


def _evaluation_report(
    report: Report, condition: Condition, index: int, conditions: int
) -> Callable[[EvaluationProgress], None]:
    """The evaluation's ``on_progress``: a progress event for condition ``index`` of ``conditions``."""

    def evaluated(progress: EvaluationProgress) -> None:
        report(_evaluating(condition, index, conditions, progress).metrics())

    return evaluated


def _evaluating(condition: Condition, index: int, conditions: int, progress: EvaluationProgress) -> Progress:
    """Evaluating condition ``index`` of ``conditions``: cases done, and the fraction of all conditions' work."""
    return Progress(
        "evaluating", fraction=(index + progress.fraction) / conditions, condition=condition.name,
        condition_index=index, conditions=conditions, cases_done=progress.cases_done, cases=progress.cases,
    )  # fmt: skip


def _model_fields(spec: TrialSpec, parts: TrialParts, device: torch.device) -> dict[str, Any]:
    """The condition-independent columns of a model's rows: size, training figures and diagnostics."""
    if parts.model is None:
        return {}
    model, stats, controller = parts.model, parts.train_stats, parts.controller
    assert isinstance(controller, ModelController)  # a zoo model is planned by a ModelController (build_trial)
    fields = {
        "tokens_per_frame": model.tokens_per_frame,
        "num_params": model.num_params,
        "train_steps": stats.steps,
        "train_seconds": stats.seconds,
        "samples_per_s": stats.samples_per_s,
        "first_loss": stats.first_loss,
        "final_loss": stats.final_loss,
        "latent_eff_rank": stats.diagnostics.get("eff_rank"),
        "sigreg_stat": stats.diagnostics.get("sigreg"),
        "plan_precision": controller.precision,  # what ran on this device, which may be less than the spec asked
        "plan_compile": spec.planner.compile,
        "plan_cuda_graphs": controller.cuda_graphs,  # what ran: false off CUDA whatever the spec asked
        "train_precision": stats.precision,
        "train_compile": spec.train.compile,
    }
    if spec.diagnostics:
        fields |= model_diagnostics(parts, spec.seed, device)
    return fields


def model_diagnostics(parts: TrialParts, seed: int, device: torch.device | str) -> dict[str, Any]:
    """What a model learned, beside how it plans: probe R² of the true state (and R², Pearson r per named
    quantity) and surprise AUROC, all scored on the held-out episodes whatever split the cases come from."""
    windows = parts.windows
    heldout = WindowDataset(parts.heldout, windows.num_frames, parts.protocol.frameskip, scaler=windows.scaler)
    probed = linear_probe(
        parts.model, parts.windows, heldout, device, max_frames=PROBE_FRAMES, quantities=parts.task.quantities
    )
    surprise = evaluate_surprise(
        parts.model, parts.task, parts.heldout, seed=seed, device=device, frameskip=parts.protocol.frameskip,
        scaler=windows.scaler,
    )  # fmt: skip
    quantities = probed["quantities"]
    named = ", ".join(f"{name} r {score['pearson_r']:.3f}" for name, score in quantities.items())
    log.info("probe R² %.3f (%s), surprise AUROC %.3f", probed["r2"], named, surprise["surprise_auroc"])
    return {
        "probe_r2": probed["r2"],
        "probe_quantities": list(quantities),
        "probe_r2_by_quantity": [score["r2"] for score in quantities.values()],
        "probe_pearson_r": [score["pearson_r"] for score in quantities.values()],
        "surprise_auroc": surprise["surprise_auroc"],
        **surprise_by_event(surprise),
    }


def execute_trial(
    spec: TrialSpec, root: str, device: str = "cpu", world_size: int = 1, report: Report | None = None
) -> list[ConditionRow]:
    """Run a trial and write its rows; any exception becomes one ``failed`` row with the error."""
    started = datetime.now(UTC)
    try:
        condition_rows, episode_rows = run_trial(spec, device, world_size, report)
    except Exception as error:  # noqa: BLE001 - a sweep records every failure and goes on
        log.exception("trial %s failed", spec.trial_id)
        protocol, packages = _failed_trial_context(spec)
        failed = ConditionRow(
            **_identity(spec, protocol, torch.device(device), packages),
            status="failed",
            error=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}",
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        condition_rows, episode_rows = [failed], []
    results.write_trial(root, spec.trial_id, condition_rows, episode_rows)
    return condition_rows


def _failed_trial_context(spec: TrialSpec) -> tuple[EvalProtocol, tuple[str, ...]]:
    """The protocol with the task's defaults and the task's packages, so a failed row sits beside its siblings."""
    try:
        task = task_class(spec.task.name)
    except Exception:  # noqa: BLE001 - the task itself may be what failed
        return spec.protocol, ()
    protocol = spec.protocol.resolved(task.default_history, task.default_frameskip, task.success_tests[0])
    return protocol, task.requires


def _identity(
    spec: TrialSpec, protocol: EvalProtocol, device: torch.device, packages: tuple[str, ...]
) -> dict[str, Any]:
    """The columns that make a row reproducible from itself."""
    return {
        "sweep": spec.sweep,
        "trial_id": spec.trial_id,
        "task": spec.task.name,
        "model": spec.model.name,
        "role": spec.role,
        "variant": spec.variant,
        "seed": spec.seed,
        "config": spec.to_json(),
        "protocol": protocol.to_json(),
        "protocol_hash": protocol.hash(),
        "node": provenance.node_name(),
        "device": provenance.device_name(device),
        "git_sha": provenance.git_sha(),
        "versions": json.dumps(provenance.versions(packages), sort_keys=True),
        "packages_hash": provenance.packages_hash(),
        "malloc_tunables": provenance.allocator_tunables(),
        "command": " ".join(sys.argv),
    }


def _episode_rows(
    spec: TrialSpec, entry: str, condition: Condition, protocol: EvalProtocol, episodes: list[EpisodeResult]
) -> list[EpisodeRow]:
    return [
        EpisodeRow(
            trial_id=spec.trial_id,
            task=spec.task.name,
            model=entry,
            role=spec.role,
            variant=spec.variant,
            seed=spec.seed,
            condition=condition.name,
            axis=condition.axis,
            magnitude=condition.magnitude,
            episode=result.case.index,
            case_seed=result.case.case_seed,
            start=result.case.start.astype(float).tolist(),
            goal=result.case.goal.astype(float).tolist(),
            success=result.success,
            final_distance=result.final_distance,
            steps=result.steps,
            plan_ms=float(sorted(result.plan_ms)[len(result.plan_ms) // 2]) if result.plan_ms else None,
            start_solved=result.case.start_solved,
            protocol_hash=protocol.hash(),
        )
        for result in episodes
    ]
