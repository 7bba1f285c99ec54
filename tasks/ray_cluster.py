"""Starting or joining the Ray cluster that collection tasks, trials and searches run on: one home for both.

Every wmbench driver connects here, so each gets the same two guarantees. Without an address it
starts a private local Ray rather than join another user's cluster on this host. And a task that
Ray's memory monitor kills is retried a bounded number of times: Ray's default retries an
OOM-killed task without limit (``task_oom_retries`` -1, apart from ``max_retries``), so a driver
waiting on collection under memory pressure would wait forever instead of failing with a message.
"""

from __future__ import annotations

import os

OOM_RETRIES = 3  # then the task fails with ray.exceptions.OutOfMemoryError, which its caller reports
# glibc's allocator by default hands a freed block of more than ~128 KB-32 MB back to the kernel (munmap, heap
# trimming), so a training step or CEM iteration that frees and re-allocates the same activations every time
# faults them in again (~2.5 M page faults per quickstart plan call). Keeping freed memory up to 32 MB a block
# cut the quickstart's LeWM training step to ~0.91x on an AVX2 EPYC (median of 20 steps, three alternating
# rounds); the price is that a worker keeps its peak heap instead of returning it. Read at process start,
# so it reaches workers through the runtime environment; a GLIBC_TUNABLES of the user's own (even empty) wins.
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


def connect(address: str | None = None, log_to_driver: bool = False) -> str:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``, else a private local one); returns the address used.

    Does nothing when this process is already connected. ``RAY_task_oom_retries`` set by the user wins;
    the bound applies to the tasks this driver submits (their owner decides on a retry). Every task and
    trial of this driver, on any node, runs with :func:`worker_env`.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "local"  # never join a stray cluster by accident
    if not ray.is_initialized():
        os.environ.setdefault("RAY_task_oom_retries", str(OOM_RETRIES))  # read when the driver's worker starts
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            runtime_env={"env_vars": worker_env()},
        )
    return address


def worker_env() -> dict[str, str]:
    """Environment variables of every Ray worker this driver starts: glibc's allocator keeping freed memory."""
    return {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ALLOCATOR_TUNABLES)}


def is_task_failure(error: BaseException) -> bool:
    """Whether ``error`` is Ray's report of a task that failed (raised, was killed, or ran out of memory)."""
    import ray.exceptions

    return isinstance(error, ray.exceptions.RayError)


def one_line(error: BaseException | str) -> str:
    """A Ray failure in one line: the error's kind and the first line of its message.

    A task's or trial's RayTaskError is read through to the exception it wraps; Ray's text trace (kept when
    an exception could not be pickled) ends by naming it; an OOM kill's message carries a table of processes.
    """
    if isinstance(error, str):
        lines = [line.strip() for line in error.splitlines() if line.strip()]
        return lines[-1] if lines else "an error Ray recorded without text"
    cause = getattr(error, "cause", None)  # a RayTaskError wraps what the task or trainable raised
    if isinstance(cause, BaseException):
        error = cause
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
