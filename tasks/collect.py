"""Fill the dataset cache ahead of a sweep: ``python -m tasks.collect TASK --episodes N [--address ADDR]``.

Collects (or finds already cached) the episodes that a sweep with the same recipe
will ask ``tasks.data.collect`` for, and prints the dataset's key, its folder, the
collection rate in frames/s and the policy's success rate. With ``--address`` the
shards are Ray tasks spread over that cluster's CPUs (``local`` starts Ray here); the
bytes are the same either way, and they are written to this machine's cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tasks import ray_cluster
from tasks.base import TASKS, make_task
from tasks.data import POLICIES, cache_root, collect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.collect", description=__doc__.splitlines()[0])
    parser.add_argument("task", help=f"task name: one of {', '.join(sorted(TASKS))}")
    parser.add_argument("--episodes", type=int, default=100, help="episodes to collect (default 100)")
    parser.add_argument("--steps", type=int, default=None, help="raw env steps per episode (default: the task's)")
    parser.add_argument("--policy", choices=POLICIES, default="expert", help="data policy (default expert)")
    parser.add_argument("--noise", type=float, default=0.1, help="std of the expert's action noise (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="collection processes (default min(4, CPUs))")
    parser.add_argument(
        "--address", default=None, help="a Ray cluster to spread the shards over (e.g. ray://HOST:10001, or local)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="frame size in px (default: the task's)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, e.g. shadow_size=4096 for cube (repeatable)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root (default $WMBENCH_CACHE or .cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.task not in TASKS:
        print(f"error: unknown task {args.task!r}; known tasks: {', '.join(sorted(TASKS))}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = {} if args.image_size is None else {"image_size": args.image_size}
    for option in args.option:
        key, separator, value = option.partition("=")
        if not separator or not key:
            print(f"error: --option takes KEY=VALUE, got {option!r}", file=sys.stderr)
            return 2
        options[key] = _parse_value(value)
    try:
        task = make_task(args.task, **options)
        root = Path(args.cache_dir if args.cache_dir is not None else cache_root())
        cached_before = {path.parent.name for path in (root / "datasets").glob("*/manifest.json")}
        if args.address is not None:
            import ray

            ray_cluster.connect(args.address)
            print(f"ray         {ray.cluster_resources().get('CPU', 0):g} CPUs at {args.address}")
        began = time.perf_counter()
        episodes = collect(
            task,
            policy=args.policy,
            episodes=args.episodes,
            steps=args.steps,
            seed=args.seed,
            noise=args.noise,
            cache_dir=args.cache_dir,
            workers=args.workers,
            progress=not args.quiet,
            backend="ray" if args.address is not None else "local",
        )
    except (ValueError, ImportError, TypeError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not ray_cluster.is_task_failure(error):
            raise
        print(f"error: a collection task failed on Ray: {ray_cluster.one_line(error)}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - began
    info = episodes.info
    folder = root / "datasets" / episodes.key
    source = "read from the cache" if episodes.key in cached_before else "collected now"
    frames = len(episodes) * (episodes.steps + 1)
    rate = info["frames_per_s"]
    success = info["policy_success_rate"]
    print(f"task        {task.name} {task.config()}")
    print(f"dataset     {episodes.key}")
    print(f"path        {folder}")
    print(f"episodes    {len(episodes)} × {episodes.steps} steps ({frames} frames), {args.policy} policy")
    print(f"frames/s    {rate:.1f} when collected" if rate is not None else "frames/s    unknown")
    print(f"shards      {len(episodes.pixels.entries)} HDF5 files, frames read on demand")
    print(f"wall        {seconds:.1f} s for this call ({source})")
    print(f"success     {success:.1%} of episodes" if success is not None else "success     n/a (policy has no goal)")
    return 0


def _parse_value(text: str) -> Any:
    """``4096`` -> int, ``0.5`` -> float, ``true`` -> bool, anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    sys.exit(main())
