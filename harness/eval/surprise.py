"""Violation of expectation: does a world model's prediction error rise at an impossible event?

Following LeWM's test (REFERENCE.md, "Violation of expectation"), a model's surprise at
frame t+1 is its latent prediction error ‖predict(z_≤t, a_≤t) − encode(frame_{t+1})‖²,
using only the WorldModel contract. Held-out sequences are scored clean and with an
impossible event injected at a known frame. Each task declares its own (tasks/events.py):
every task has a teleport and a colour change (on Cube the cube's, as LeWM's paper tests),
Two-Room also a vanishing agent and a pass through the wall. Surprise is z-scored against
the same model's surprise on the clean sequences, so models of different latent scales
read alike. Per event (a trial's rows carry AUROC and p per event: ``surprise_by_event``):

- AUROC of surprise at the event frame against every clean frame (Mann–Whitney U);
- detection delay: frames from the event until surprise first exceeds the clean 95th
  percentile (mean over the sequences where it does), and the fraction where it does;
- a one-sided paired t-test of surprise at the event frame against the same frame of the
  clean twin (the published test; p < 0.01 counts as detected).

The same quantity, unnormalised, scores the evaluation cases of the rare-state study
(:func:`case_surprise`): a model's mean surprise along a case's recorded frames from its start
to its goal, which ``stress rarity`` stores beside the case's rarity.

    python -m harness surprise sweeps/quickstart.yaml seeds=[0]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from einops import rearrange

from harness.eval.cases import Case
from harness.eval.controllers import to_model_pixels
from harness.eval.protocol import EvalProtocol
from models.world_model import WorldModel
from tasks.base import Task
from tasks.data import Episodes
from tasks.events import EVENTS, impossible_events
from tasks.scaler import ActionScaler

log = logging.getLogger(__name__)

CLEAN_QUANTILE = 95  # detection threshold: this percentile of clean surprise


@torch.inference_mode()
def frame_surprise(
    model: WorldModel, frames: np.ndarray, blocks: np.ndarray, device: torch.device | str = "cpu", chunk: int = 16
) -> np.ndarray:
    """Surprise of every frame: frames (E, T, H, W, 3) uint8, action blocks (E, T-1, A) -> (E, T).

    Frame t (t ≥ h, the model's history) is predicted from frames t-h..t-1 and their
    action blocks; the first h frames have no prediction and are NaN.
    """
    h = model.history
    surprise = np.full(frames.shape[:2], np.nan)
    for first in range(0, len(frames), chunk):
        pixels = to_model_pixels(frames[first : first + chunk], device)  # (E, T, 3, H, W)
        actions = torch.from_numpy(np.ascontiguousarray(blocks[first : first + chunk])).float().to(device)
        z = model.encode(pixels)  # (E, T, N, D)
        context = rearrange(z[:, :-1].unfold(1, h, 1), "e w n d h -> (e w) h n d")  # (E·W, h, N, D), W = T - h
        context_actions = rearrange(actions.unfold(1, h, 1), "e w a h -> (e w) h a")  # (E·W, h, A)
        predicted = model.predict(context, context_actions)[:, -1]  # (E·W, N, D)
        target = rearrange(z[:, h:], "e w n d -> (e w) n d")
        error = (predicted.float() - target.float()).square().sum(dim=(-2, -1))  # (E·W,)
        surprise[first : first + chunk, h:] = rearrange(error, "(e w) -> e w", e=len(pixels)).cpu().numpy()
    return surprise


def action_blocks(actions: np.ndarray, frameskip: int, scaler: ActionScaler | None = None) -> np.ndarray:
    """Raw actions (..., T·k, A) as the model's action blocks (..., T, k·A), k = ``frameskip``; in the standardised
    units the model was trained in when ``scaler`` (the training windows') is given."""
    blocks = rearrange(actions, "... (t k) a -> ... t (k a)", k=frameskip)
    return blocks if scaler is None else scaler.transform(blocks)


def case_window(
    source: Episodes, case: Case, protocol: EvalProtocol, history: int, scaler: ActionScaler | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The recorded frames a case's surprise is scored along: frames (T, H, W, 3) and action blocks (T-1, k·A).

    ``history`` frames up to the start (steps start − (h−1)·k, ..., start of the case's source episode), then one
    frame per action block up to the goal (goal_offset // k blocks: the goal itself when k divides the offset),
    with the recorded actions between them; every frame after the start is predicted from the h before it.
    """
    frameskip = protocol.frameskip
    assert frameskip is not None, "resolve the protocol against the task first"
    first = case.start_step - (history - 1) * frameskip
    if first < 0:
        raise ValueError(
            f"case {case.case_seed} starts at step {case.start_step}, before a history of {history} frames "
            f"(every {frameskip} steps) fits; the model's history is longer than the protocol's"
        )
    last = case.start_step + protocol.goal_offset // frameskip * frameskip
    frames = source.pixels[case.episode, first : last + 1 : frameskip]
    return frames, action_blocks(source.actions[case.episode, first:last], frameskip, scaler)


def mean_surprise(
    model: WorldModel, frames: np.ndarray, blocks: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Mean surprise of each sequence over the frames it predicts (every frame after the model's first h):
    frames (E, T, H, W, 3) uint8, action blocks (E, T-1, A) -> (E,). The :func:`frame_surprise` units."""
    return frame_surprise(model, frames, blocks, device)[:, model.history :].mean(axis=1)


def case_surprise(
    model: WorldModel,
    source: Episodes,
    cases: Sequence[Case],
    protocol: EvalProtocol,
    scaler: ActionScaler | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Each case's mean surprise along its recorded frames from its start to its goal (:func:`case_window`), (C,).

    ``source`` is the collection the cases were drawn from; ``scaler`` standardises the recorded actions as in
    training. Unnormalised (not z-scored): the model's own latent units, comparable across one model's cases.
    """
    if not cases:
        return np.empty(0)
    windows = [case_window(source, case, protocol, model.history, scaler) for case in cases]
    frames = np.stack([window_frames for window_frames, _ in windows])  # (C, T, H, W, 3)
    blocks = np.stack([window_blocks for _, window_blocks in windows])  # (C, T-1, k·A)
    return mean_surprise(model.eval(), frames, blocks, device)


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half: Mann–Whitney U / (n₊·n₋)."""
    from scipy import stats  # here: scipy.stats costs a process ~1.6 s to import, and only diagnostics use it

    u = stats.mannwhitneyu(positives, negatives, alternative="greater").statistic
    return float(u / (len(positives) * len(negatives)))


def evaluate_surprise(
    model: WorldModel,
    task: Task,
    episodes: Episodes,
    events: tuple[str, ...] = EVENTS,
    seed: int = 0,
    device: torch.device | str = "cpu",
    frameskip: int | None = None,
    scaler: ActionScaler | None = None,
) -> dict[str, float]:
    """Surprise figures of ``model`` on held-out ``episodes``, per event and averaged.

    Returns ``surprise_auroc`` (the mean over the events evaluated) and, per event,
    ``surprise_auroc_<event>``, ``surprise_delay_<event>``, ``surprise_detected_<event>``,
    ``surprise_p_<event>`` and ``surprise_n_<event>`` (sequences with the event). Events the
    task has no implementation of are skipped with a logged reason. ``scaler`` standardises the
    raw actions as in training (the training windows' scaler).
    """
    from scipy import stats  # see auroc

    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; events: {', '.join(EVENTS)}")
    frameskip = frameskip or task.default_frameskip
    model = model.eval()
    h = model.history
    count = episodes.steps // frameskip  # action blocks per sequence
    frames = episodes.pixels[:, : count * frameskip + 1 : frameskip]  # (E, T, H, W, 3), T = count + 1
    states = episodes.states[:, : count * frameskip + 1 : frameskip]  # (E, T, S)
    raw = rearrange(episodes.actions[:, : count * frameskip], "e (t k) a -> e t k a", k=frameskip)  # (E, T-1, k, A)
    blocks = action_blocks(episodes.actions[:, : count * frameskip], frameskip, scaler)  # (E, T-1, k·A)
    if count < h + 1:
        raise ValueError(
            f"episodes of {episodes.steps} steps give {count + 1} frames at frameskip {frameskip}; "
            f"surprise needs at least {h + 2} (history {h}, an event frame and one after it)"
        )

    clean = frame_surprise(model, frames, blocks, device)  # (E, T)
    clean_steps = clean[:, h:].ravel()
    mean, std = clean_steps.mean(), clean_steps.std() + 1e-12
    clean_z = (clean - mean) / std
    threshold = np.percentile(clean_z[:, h:], CLEAN_QUANTILE)

    maker = impossible_events(task, rearrange(states, "e t s -> (e t) s"))
    figures: dict[str, float] = {}
    aurocs = []
    for index, event in enumerate(events):
        if event not in maker.events:
            log.info(
                "surprise: task %r has no %r event (it has %s); skipped", task.name, event, ", ".join(maker.events)
            )
            continue
        hosts, steps, twins = [], [], []
        for sequence in range(len(frames)):
            rng = np.random.default_rng([seed, index, sequence])
            step = maker.choose_step(event, states[sequence], h, count - 1, rng)
            if step is None:
                continue
            twins.append(maker.inject(event, frames[sequence], states[sequence], raw[sequence], step, rng))
            hosts.append(sequence)
            steps.append(step)
        if not hosts:
            log.info("surprise: no sequence can host a %r event (e.g. none comes near the wall); skipped", event)
            continue
        twin_z = (frame_surprise(model, np.stack(twins), blocks[hosts], device) - mean) / std  # (n, T)
        at_event = twin_z[np.arange(len(hosts)), steps]
        clean_at_event = clean_z[hosts, steps]
        delays = [_first_above(twin_z[i, step:], threshold) for i, step in enumerate(steps)]
        detected = [d for d in delays if d is not None]
        figures[f"surprise_auroc_{event}"] = auroc(at_event, clean_z[:, h:].ravel())
        figures[f"surprise_delay_{event}"] = float(np.mean(detected)) if detected else float("nan")
        figures[f"surprise_detected_{event}"] = len(detected) / len(delays)
        figures[f"surprise_p_{event}"] = float(stats.ttest_rel(at_event, clean_at_event, alternative="greater").pvalue)
        figures[f"surprise_n_{event}"] = float(len(hosts))
        aurocs.append(figures[f"surprise_auroc_{event}"])
    figures["surprise_auroc"] = float(np.mean(aurocs)) if aurocs else float("nan")
    return figures


def surprise_by_event(figures: dict[str, float]) -> dict[str, list]:
    """The per-event figures of :func:`evaluate_surprise` as a row's parallel lists: ``surprise_events`` (those
    evaluated, in EVENTS order), ``surprise_auroc_by_event`` and ``surprise_p_by_event`` (the paired t-test)."""
    events = [event for event in EVENTS if f"surprise_auroc_{event}" in figures]
    return {
        "surprise_events": events,
        "surprise_auroc_by_event": [figures[f"surprise_auroc_{event}"] for event in events],
        "surprise_p_by_event": [figures[f"surprise_p_{event}"] for event in events],
    }


def _first_above(values: np.ndarray, threshold: float) -> int | None:
    above = np.flatnonzero(values > threshold)
    return int(above[0]) if len(above) else None


def surprise_table(title: str, figures: dict[str, Any]) -> str:
    """The figures of :func:`evaluate_surprise` as a small text table, one line per event evaluated."""
    lines = [title, f"  {'event':<18} {'AUROC':>6} {'p':>9} {'delay':>6} {'detected':>9} {'n':>4}"]
    for event in EVENTS:
        if f"surprise_auroc_{event}" in figures:
            lines.append(
                f"  {event:<18} {figures[f'surprise_auroc_{event}']:6.3f} {figures[f'surprise_p_{event}']:9.2g} "
                f"{figures[f'surprise_delay_{event}']:6.2f} {figures[f'surprise_detected_{event}']:9.2f} "
                f"{int(figures[f'surprise_n_{event}']):4d}"
            )
    lines.append(f"  mean AUROC {figures['surprise_auroc']:.3f}")
    return "\n".join(lines)
