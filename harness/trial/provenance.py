"""Provenance: what a row records about where and with what it was made (commit, packages, node, device)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import resource
import subprocess
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
# Packages every figure depends on; a task adds the ones it declares (Task.requires).
BASE_PACKAGES = ("torch", "ray", "numpy", "pyarrow", "gymnasium", "wmbench")


@cache
def git_sha() -> str:
    """The commit the harness runs from ("unknown" outside a git checkout), "+dirty" when modified."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions(packages: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the base packages and ``packages`` (those that are installed), plus Python."""
    return {"python": platform.python_version(), **_installed(tuple(dict.fromkeys((*BASE_PACKAGES, *packages))))}


@cache
def _installed(packages: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


@cache
def packages_hash() -> str:
    """A short hash of every installed distribution and its version: equal hashes, equal environments."""
    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return hashlib.sha256("\n".join(installed).encode()).hexdigest()[:12]


def node_name() -> str:
    """The Ray node id when running inside Ray, else the host name."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node id
        pass
    return platform.node()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def allocator_tunables() -> str:
    """The GLIBC_TUNABLES this process started with ("" for glibc's defaults): they change its speed."""
    return os.environ.get("GLIBC_TUNABLES", "")


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak memory from now: CUDA's peak allocation, and Linux's peak RSS (clear_refs 5), so a trial
    in a process that ran another before it (Tune reusing its actor) reports its own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):  # elsewhere the peak is the process's since its start
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocation on GPU, else the peak RSS (VmHWM) since :func:`reset_peak_memory` or the process's start."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """The process's peak resident set since :func:`reset_peak_memory` (VmHWM), or since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
