"""Replay one mined failure case and draw it: ``python -m harness.eval.replay FILE ROW [--out DIR]``.

A row of a failures file (harness/stress.py) holds everything the case needs: the
trial config (task, data, model, planner, protocol), the start with its history, the
goal and the condition. The replay rebuilds the controller (the model from the
checkpoint cache, or ``--controller random|oracle``), runs the episode through the
same evaluator, prints the outcome beside the recorded one and saves an image strip:
the start, the frame after every executed action block, and the goal, as the
controller saw them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.eval.evaluation import EpisodeResult, run_episodes
from harness.eval.stress import case_from_row, prepare_trial
from tasks.base import Task, TaskEnv
from tasks.conditions import Condition

log = logging.getLogger(__name__)


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
        return getattr(self.env, name)  # e.g. set_viewpoint, where the env has a movable camera


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


def replay(row: pd.Series, controller: str | None = None) -> tuple[EpisodeResult, np.ndarray, Condition]:
    """Re-run the case of a failures row: (its result, the frames (F, H, W, 3) as seen, the condition)."""
    config = json.loads(row["config"])
    setup = prepare_trial(config, controller=controller)
    case = case_from_row(row)
    condition = Condition(**json.loads(row["condition_params"]))
    filmed = FilmedTask(setup.task)
    receding = config["planner"]["receding"]
    result = run_episodes(setup.controller, filmed, [case], setup.protocol, condition, receding, batch_size=1)[0]
    env = setup.task.make_env(seed=0)
    try:
        env.reset(seed=0)
        view = condition.place_camera(env)  # what is left to apply to the frames, as in the evaluator
        start, goal = env.set_state(case.start)["pixels"], env.set_state(case.goal)["pixels"]
    finally:
        env.close()
    frames = np.stack([start, *filmed.envs[0].frames, goal])
    return result, view.observe(frames), condition


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
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.eval.replay", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a failures Parquet file, e.g. results/stress/failures/<trial>.parquet")
    parser.add_argument("row", type=int, help="the row to replay (0 = the hardest case found)")
    parser.add_argument("--out", default=".", help="folder for the image strip (default: here)")
    parser.add_argument("--controller", choices=("random", "oracle"), help="replay with a reference controller")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rows = pd.read_parquet(args.file)
    if not 0 <= args.row < len(rows):
        print(f"error: row {args.row} is out of range; {args.file} has rows 0..{len(rows) - 1}", file=sys.stderr)
        return 2
    row = rows.iloc[args.row]
    result, frames, condition = replay(row, args.controller)
    who = args.controller or row["model"]
    print(
        f"{row['task']} {who} seed {row['seed']} case {row['case_seed']} under {condition.name}: "
        f"success {result.success} (recorded {bool(row['success'])}), final distance {result.final_distance:.3f} "
        f"(recorded {row['final_distance']:.3f})"
    )
    name = f"{row['trial_id'] or row['task']}-row{args.row}{'-' + args.controller if args.controller else ''}.png"
    title = f"{row['task']} · {who} · {condition.name} · success {result.success}"
    print(f"image strip: {save_strip(frames, Path(args.out) / name, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
