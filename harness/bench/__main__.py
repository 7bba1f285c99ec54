"""``python -m harness.bench BENCHMARK [options]``: run one of the harness's own benchmarks, or list them."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "data": "harness.bench.data",  # collection frames/s, loader windows/s, a training trial's peak memory
    "speed": "harness.bench.speed",  # planning and training speed of the zoo, FLOP/s, peak memory (--peer)
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m harness.bench BENCHMARK [options]   (BENCHMARK --help for its options)")
        for name, module in BENCHMARKS.items():
            summary = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"  {name:6}  {summary}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
