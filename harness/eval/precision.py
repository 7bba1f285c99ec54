"""Numeric precision: fp32 everywhere, bf16 autocast where the device has bf16 units.

Planning (``PlannerConfig.precision``) and training (``TrainConfig.bf16``) ask for a precision;
:func:`resolve_precision` says what the device gives — bf16 on CUDA GPUs that support it and on
CPUs with AMX or AVX-512 bf16 units (the ``amx_bf16`` / ``avx512_bf16`` flags of /proc/cpuinfo),
fp32 elsewhere — and :func:`autocast_for` applies it. Rows record the resolved precision, so a
figure always says how it was obtained. (``torch.backends.cpu.get_cpu_capability()`` names the
vector width, "AVX512", not whether bf16 instructions exist, so the flags are read instead.)
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU has bf16 matrix or vector units (Linux /proc/cpuinfo; False where it cannot be read)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast runs on ``device``'s own bf16 hardware (CUDA, or a CPU with bf16 units)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_units()


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """What runs on ``device`` when ``requested`` is asked for: bf16 falls back to fp32 without bf16 units."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "bf16" and not bf16_supported(device):
        logger.warning("bf16 asked for on %s, which has no bf16 units: running in fp32", torch.device(device))
        return "fp32"
    return requested


def autocast_for(device: torch.device | str, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` for ``precision="bf16"``, a disabled (fp32) one otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
