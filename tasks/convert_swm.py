"""Convert a stable-worldmodel dataset into wmbench's store: ``python -m tasks.convert_swm SOURCE --task TASK``.

SOURCE is their HDF5 file (``.h5``) or Lance table (``.lance``, needs ``pip install 'wmbench[swm]'``),
or a folder holding one. The episodes are cut to one length (``--steps``, default the median
episode's; shorter ones are left out), checked against the task's frame size and action and
state widths, and written once as checksummed shards under a content key (tasks/swm_data.py).
The folder it prints is what a sweep names to train on them:

    data:
      source: /abs/path/printed/here   # training episodes; held-out ones are still collected
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tasks.base import TASKS, make_task
from tasks.swm_data import Columns, SWMDataError, convert


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.convert_swm", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="their dataset: a .h5 file or a .lance table (or a folder of one)")
    parser.add_argument("--task", required=True, help=f"the wmbench task it is for: one of {', '.join(sorted(TASKS))}")
    parser.add_argument("--image-size", type=int, default=None, help="the task's frame size in px (default: its own)")
    parser.add_argument("--format", choices=("hdf5", "lance"), default=None, help="default: from the file name")
    parser.add_argument("--steps", type=int, default=None, help="raw steps per episode (default: the median's)")
    parser.add_argument("--pixels", default="pixels", help="their frame column (default pixels)")
    parser.add_argument("--action", default="action", help="their action column (default action)")
    parser.add_argument("--state", default="state", help="their state column (default state; e.g. proprio)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <cache>/datasets/swm-<key>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.task not in TASKS:
        print(f"error: unknown task {args.task!r}; known tasks: {', '.join(sorted(TASKS))}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    task = make_task(args.task, **({} if args.image_size is None else {"image_size": args.image_size}))
    columns = Columns(pixels=args.pixels, action=args.action, state=args.state)
    try:
        episodes = convert(args.source, task, args.format, args.steps, columns, args.out)
    except SWMDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    source = episodes.info["source"]
    folder = episodes.pixels.folder.resolve()
    print(f"key         {episodes.key}")
    print(f"episodes    {len(episodes)} of {source['episodes']} ({source['left_out_shorter']} shorter ones left out)")
    print(f"steps       {episodes.steps} per episode, frames {episodes.pixels.shape[2]} px")
    print(f"folder      {folder}")
    print(f"sweep       data: {{source: {folder}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
