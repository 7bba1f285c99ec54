"""Numeric precision: fp32 everywhere, bf16 autocast where the device has bf16 units.

Planning (``PlannerConfig.precision``) and training (``TrainConfig.bf16``) ask for a precision;
:func:`resolve_precision` says what the device gives — bf16 on CUDA GPUs that support it and on
CPUs with AMX or AVX-512 bf16 units (the ``amx_bf16`` / ``avx512_bf16`` flags of /proc/cpuinfo),
fp32 elsewhere — and :func:`autocast_for` applies it. Rows record the resolved precision, so a
figure always says how it was obtained. (``torch.backends.cpu.get_cpu_capability()`` names the
vector width, "AVX512", not whether bf16 instructions exist, so the flags are read instead.)
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

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


def training_attention(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The attention kernels a training step may use: on a CPU in bf16 only PyTorch's math kernel, else any.

    The fused CPU kernel's bf16 backward ran ~5× slower than its fp32 one and made LeWM-tiny's bf16 step
    slower than fp32 (torch profiler, batch 64 at 64 px, one thread); the math kernel's batched matmuls
    use AMX. Planning keeps the fused kernel: forward only, it is as fast at tiny size and twice as fast
    at paper size (``harness.bench speed --sizes paper --precision bf16``, side by side).
    """
    if precision == "bf16" and torch.device(device).type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()
