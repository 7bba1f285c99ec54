"""The data path's own benchmark: collection frames/s, loader windows/s, training windows/s and peak memory.

``python -m harness.bench.data --task two_room --image-size 224 --episodes 100 400`` collects each
size (or reads it from the cache), then in a fresh process per size trains LeWM (``--size``,
tiny by default) for a few steps on it and reports that process's peak resident memory, so sizes
can be compared side by side: with frames read on demand the peak must not grow with the
episodes. ``--loader 0 4`` adds the loader's own windows/s at batch 128 with 0 and 4 workers.

The training figures come from the loop trials run (``TrainStep`` over the trial's loader, at
``--batch-size`` with ``--train-workers`` loader processes, on ``--device``), the first step left
out: windows/s, and the loader's share of step time — the time spent waiting for the next batch
over the loop's wall time, an upper bound on how long the device waits for data (on a GPU part of
that wait overlaps the previous step's kernels). ``--train-seconds`` trains for a time instead of
a number of steps. On CUDA it also reports the peak GPU memory allocated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness.trial.training import TrainConfig, TrainStep, infinite_batches
from models.registry import build_model
from tasks.base import make_task
from tasks.data import WindowDataset, collect


def measure(args: argparse.Namespace, episodes: int) -> dict:
    """One size's figures, measured in this process (call it in a fresh one: peak RSS is per process)."""
    device, image_size, steps = torch.device(args.device), args.image_size, args.steps
    task = make_task(args.task, image_size=image_size)
    began = time.perf_counter()
    data = collect(task, "expert", episodes, steps, seed=0, noise=0.3, workers=1, progress=False)
    figures = {"episodes": episodes, "frames": episodes * (steps + 1), "open_s": time.perf_counter() - began}
    windows = WindowDataset(data, num_frames=4, frameskip=task.default_frameskip)
    for workers in args.loader:
        batches = torch.utils.data.DataLoader(windows, batch_size=128, shuffle=True, num_workers=workers)
        began, count = time.perf_counter(), 0
        for count, _ in enumerate(batches, start=1):
            if count == 8:
                break
        figures[f"windows_per_s_workers_{workers}"] = 128 * count / (time.perf_counter() - began)
    torch.manual_seed(0)
    history = task.default_history
    model = build_model("lewm", args.size, image_size, task.action_dim * task.default_frameskip, history=history)
    steps_planned = 10**6 if args.train_seconds else args.train_steps  # with a time budget: the schedule of a long run
    cfg = TrainConfig(steps=steps_planned, batch_size=args.batch_size, num_frames=4,
                      num_workers=args.train_workers)  # fmt: skip
    figures |= timed_training(model, windows, cfg, device, args.train_seconds)
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    if args.train_workers:  # the loader's processes, joined when the loop closed its batches
        figures["peak_rss_worker_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return figures


def timed_training(
    model: torch.nn.Module, windows: WindowDataset, cfg: TrainConfig, device: torch.device, seconds: float | None
) -> dict:
    """Steps of ``TrainStep`` over the trial's loader: windows/s and the loader's share, the first step left out.

    Trains ``cfg.steps`` steps, or for ``seconds`` when given (at least two steps either way).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    model.prepare(windows)
    model.train()
    take_step = TrainStep(model, cfg, device)
    batches = infinite_batches(windows, cfg, device, seed=0)
    began = time.perf_counter()
    step, waited = 0, 0.0
    while True:
        if step == 1:  # the first step (loader start-up, autotuning, allocation) is left out
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed_from, waited = time.perf_counter(), 0.0
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        take_step(batch, step)
        step += 1
        if step >= 2 and (time.perf_counter() - began >= seconds if seconds else step >= cfg.steps):
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - timed_from
    batches.close()  # the loader's workers exit
    figures = {
        "train_s": time.perf_counter() - began,
        "train_steps": step,
        "train_windows_per_s": (step - 1) * cfg.batch_size / wall,
        "loader_share": waited / wall,
        "train_precision": take_step.precision,
    }
    if device.type == "cuda":
        figures["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.bench.data", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="two_room")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--episodes", type=int, nargs="+", default=[100, 400])
    p.add_argument("--steps", type=int, default=100, help="raw steps per episode")
    p.add_argument("--size", default="tiny", help="LeWM size preset trained (tiny, paper)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=16, help="training windows per step")
    p.add_argument("--train-steps", type=int, default=5, help="training steps (at least 2: the first is not timed)")
    p.add_argument("--train-seconds", type=float, help="train for this long instead of --train-steps")
    p.add_argument("--train-workers", type=int, default=0, help="the training loader's num_workers")
    p.add_argument("--loader", type=int, nargs="*", default=[], metavar="WORKERS", help="num_workers to time")
    p.add_argument("--out", type=Path, help="also write each size's figures to this JSON file")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process's mode
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.train_steps < 2 or args.batch_size < 1 or (args.train_seconds is not None and args.train_seconds <= 0):
        print("error: --train-steps must be at least 2, --batch-size and --train-seconds positive", file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(measure(args, args.episodes[0])))
        return 0
    budget = f"{args.train_seconds:g} s" if args.train_seconds else f"{args.train_steps} steps"
    print(f"{args.task} at {args.image_size} px, {args.steps} steps per episode, LeWM-{args.size} × {budget} "
          f"at batch {args.batch_size} on {args.device}")  # fmt: skip
    measured = []
    for episodes in args.episodes:  # a fresh process per size: peak RSS is per process
        child_argv = [arg for arg in argv if arg != "--one"] + ["--one", "--episodes", str(episodes)]
        command = [sys.executable, "-m", "harness.bench.data", *child_argv]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode:
            print(child.stderr.strip().splitlines()[-1], file=sys.stderr)
            return child.returncode
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        measured.append(figures)
        print("  " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(measured, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
