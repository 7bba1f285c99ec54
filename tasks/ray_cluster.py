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


def connect(address: str | None = None, log_to_driver: bool = False) -> str:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``, else a private local one); returns the address used.

    Does nothing when this process is already connected. ``RAY_task_oom_retries`` set by the user wins;
    the bound applies to the tasks this driver submits (their owner decides on a retry).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or "local"  # never join a stray cluster by accident
    if not ray.is_initialized():
        os.environ.setdefault("RAY_task_oom_retries", str(OOM_RETRIES))  # read when the driver's worker starts
        ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver)
    return address


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
