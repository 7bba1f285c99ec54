"""Replay mined failure cases and draw them (``python -m harness replay FILE ROW [--out DIR]``, one case;
``python -m harness replay-failures RESULTS [--top N]``, the hardest N of every trial).

A row of a failures file (harness/eval/stress.py) holds everything the case needs: the
trial spec (task, data, model, planner, protocol), the start with its history, the goal
and the condition. The commands rebuild the controller from the spec (the model from the
checkpoint cache, or ``--controller random|oracle``); :func:`replay` runs the episode
through the same evaluator, and :func:`save_strip` draws the start, the frame after every
executed action block, and the goal, as the controller saw them. :func:`replay_top` does
that for the first rows of one trial's failures and returns a typed row per strip
(``RESULTS/replays.parquet``, which the leaderboard links its strips from).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from harness.eval.cases import Case
from harness.eval.controllers import Controller
from harness.eval.evaluation import EpisodeResult, run_episodes
from harness.eval.protocol import EvalProtocol
from harness.report.results import STRIPS_DIR, ReplayRow
from tasks.base import Task, TaskEnv
from tasks.conditions import Condition


class FilmedEnv:
    """An env that keeps every frame the evaluator renders between steps; all else passes through."""

    def __init__(self, env: TaskEnv) -> None:
        self.env = env
        self.frames: list[np.ndarray] = []

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)

    def step(self, action: np.ndarray):
        return self.env.step(action)

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        return self.env.set_state(state)

    def get_state(self) -> np.ndarray:
        return self.env.get_state()

    def render_pixels(self) -> np.ndarray:
        frame = self.env.render_pixels()
        self.frames.append(frame)
        return frame

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str):
        return getattr(self.env, name)  # e.g. set_viewpoint and set_factors


class FilmedTask:
    """A task whose envs are filmed (:class:`FilmedEnv`); every other attribute is the task's own."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.envs: list[FilmedEnv] = []

    def make_env(self, seed: int | None = None) -> FilmedEnv:
        env = FilmedEnv(self.task.make_env(seed=seed))
        self.envs.append(env)
        return env

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def replay(
    row: pd.Series, task: Task, protocol: EvalProtocol, controller: Controller
) -> tuple[EpisodeResult, np.ndarray, Condition]:
    """Re-run the case of a failures row with ``controller``: (its result, the frames (F, H, W, 3) as seen,
    the condition). The caller builds the task, protocol and controller from the row's own config."""
    case = case_from_row(row, protocol.frameskip)
    condition = Condition(**json.loads(row["condition_params"]))
    filmed = FilmedTask(task)
    result = run_episodes(controller, filmed, [case], protocol, condition, batch_size=1)[0]
    env = task.make_env(seed=0)
    try:
        env.reset(seed=0)
        view = condition.stage(task, env, case.case_seed)  # what is left to apply to the frames, as in the evaluator
        start, goal = env.set_state(case.start)["pixels"], env.set_state(case.goal)["pixels"]
    finally:
        env.close()
    frames = np.stack([start, *filmed.envs[0].frames, goal])
    return result, view.observe(frames), condition


def case_from_row(row: pd.Series, frameskip: int) -> Case:
    """The :class:`Case` a failure row describes, given the protocol's frameskip.

    The row stores the history's action blocks as a list of lists; with history 1 that list
    is empty, and the blocks keep their shape (0, frameskip × A) only because it is rebuilt here.
    """
    recorded = np.asarray(list(row["recorded_actions"]), dtype=np.float32)  # (goal_offset, A)
    width = frameskip * recorded.shape[-1]
    history_actions = np.asarray([list(block) for block in row["history_actions"]], dtype=np.float32)
    return Case(
        index=0,
        case_seed=int(row["case_seed"]),
        episode=int(row["episode"]),
        start_step=int(row["start_step"]),
        history_states=np.asarray(list(row["history_states"]), dtype=np.float32),
        history_actions=history_actions.reshape(-1, width),  # (h-1, frameskip·A), also when h-1 = 0
        goal=np.asarray(row["goal"], dtype=np.float32),
        recorded_actions=recorded,
        start_solved=False,
    )


def save_strip(frames: np.ndarray, path: Path, title: str) -> Path:
    """Frames (F, H, W, 3) side by side as a PNG: start, one per action block, goal last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(frames)
    figure, axes = plt.subplots(1, count, figsize=(1.3 * count, 1.8), squeeze=False)
    for index, (axis, frame) in enumerate(zip(axes[0], frames, strict=True)):
        axis.imshow(frame)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title("start" if index == 0 else "goal" if index == count - 1 else f"{index}", fontsize=8)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")  # atomic: a page never links half a strip
    try:
        figure.savefig(temp, dpi=100, format="png")
        os.replace(temp, path)
    finally:
        plt.close(figure)
        temp.unlink(missing_ok=True)
    return path


def strip_name(trial_id: str, row: int, controller: str | None = None) -> str:
    """The image strip of row ``row`` of a trial's failures: ``<trial_id>_<row>.png`` (``_<controller>`` before
    the suffix when a reference controller replayed it instead of the trial's own)."""
    return f"{trial_id}_{row}" + (f"_{controller}" if controller else "") + ".png"


def replay_top(
    failures: pd.DataFrame,
    top: int,
    task: Task,
    protocol: EvalProtocol,
    controller: Controller,
    root: Path,
    role: str,
    variant: str = "",
) -> list[ReplayRow]:
    """Replay the first ``top`` rows of one trial's failures (hardest first) with its own controller, draw each
    to ``root/strips/<trial_id>_<row>.png`` and return a :class:`ReplayRow` per strip."""
    replayed = []
    for index in range(min(top, len(failures))):
        row = failures.iloc[index]
        result, frames, condition = replay(row, task, protocol, controller)
        strip = f"{STRIPS_DIR}/{strip_name(row['trial_id'], index)}"
        title = f"{row['task']} · {row['model']} · {condition.name} · success {result.success}"
        save_strip(frames, root / strip, title)
        replayed.append(
            ReplayRow(
                trial_id=row["trial_id"], failure_row=index, task=row["task"], model=row["model"], role=role,
                variant=variant, seed=int(row["seed"]), protocol_hash=protocol.hash(), condition=condition.name,
                case_seed=int(row["case_seed"]), start_rarity=_optional_float(row.get("start_rarity")),
                goal_rarity=_optional_float(row.get("goal_rarity")), recorded_success=bool(row["success"]),
                recorded_final_distance=float(row["final_distance"]), success=bool(result.success),
                final_distance=float(result.final_distance), strip=strip,
            )
        )  # fmt: skip
    return replayed


def _optional_float(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
