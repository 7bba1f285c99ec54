"""The data path's own benchmark: collection frames/s, loader windows/s and a training trial's peak memory.

``python -m harness.bench.data --task two_room --image-size 224 --episodes 100 400`` collects each
size (or reads it from the cache), then in a fresh process per size trains LeWM-tiny for a few
steps on it and reports that process's peak resident memory, so sizes can be compared side by
side: with frames read on demand the peak must not grow with the episodes. ``--loader`` adds
windows/s at batch 128 for each ``--num-workers``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from harness.trial.training import TrainConfig, train
from models.registry import build_model
from tasks.base import make_task
from tasks.data import WindowDataset, collect


def measure(task_name: str, image_size: int, episodes: int, steps: int, train_steps: int, loader: list[int]) -> dict:
    """One size's figures, measured in this process (call it in a fresh one: peak RSS is per process)."""
    task = make_task(task_name, image_size=image_size)
    began = time.perf_counter()
    data = collect(task, "expert", episodes, steps, seed=0, noise=0.3, workers=1, progress=False)
    figures = {"episodes": episodes, "frames": episodes * (steps + 1), "open_s": time.perf_counter() - began}
    windows = WindowDataset(data, num_frames=4, frameskip=task.default_frameskip)
    for workers in loader:
        batches = torch.utils.data.DataLoader(windows, batch_size=128, shuffle=True, num_workers=workers)
        began, count = time.perf_counter(), 0
        for count, _ in enumerate(batches, start=1):
            if count == 8:
                break
        figures[f"windows_per_s_workers_{workers}"] = 128 * count / (time.perf_counter() - began)
    torch.manual_seed(0)
    model = build_model("lewm", "tiny", image_size, task.action_dim * task.default_frameskip, history=1)
    cfg = TrainConfig(steps=train_steps, batch_size=16, lr=1e-3, log_every=train_steps, num_frames=4)
    began = time.perf_counter()
    train(model, windows, cfg, "cpu", seed=0)
    figures["train_s"] = time.perf_counter() - began
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.data", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="two_room")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--episodes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--steps", type=int, default=100, help="raw steps per episode")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--loader", type=int, nargs="*", default=[], metavar="WORKERS", help="num_workers to time")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process's mode
    args = parser.parse_args(argv)
    if args.one:
        figures = measure(args.task, args.image_size, args.episodes[0], args.steps, args.train_steps, args.loader)
        print(json.dumps(figures))
        return 0
    print(f"{args.task} at {args.image_size} px, {args.steps} steps per episode, LeWM-tiny × {args.train_steps} steps")
    for episodes in args.episodes:
        command = [sys.executable, "-m", "harness.bench.data", "--one", "--task", args.task, "--image-size",
                   str(args.image_size), "--episodes", str(episodes), "--steps", str(args.steps),
                   "--train-steps", str(args.train_steps), "--loader", *map(str, args.loader)]  # fmt: skip
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode:
            print(child.stderr.strip().splitlines()[-1], file=sys.stderr)
            return child.returncode
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        print("  " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
