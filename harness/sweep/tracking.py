"""Experiment tracking, chosen in the sweep (``tracking: none | tensorboard | wandb | mlflow``), through Ray
Tune's logger callbacks.

Whatever a trial reports reaches the tracker: every training record as ``train/<name>`` (each loss
term, lr, samples/s, latent std, effective rank, SIGReg statistic), every condition's summary as
``eval/<condition>/<figure>``, and the final ``success_rate``; the ``progress/*`` events are for the
driver's display and are left out. Each trial is one run named by its trial id, holding the trial's
whole spec as its config, grouped by sweep: W&B group (and MLflow experiment) = the sweep's name.

W&B runs offline unless ``WANDB_MODE`` says otherwise, into ``<results>/wandb/offline-run-*``
(``wandb sync <that folder>`` uploads one later). TensorBoard is Ray's own TBX logger, writing into
each trial's folder under ``<results>/ray/`` (``tensorboard --logdir <results>/ray``). MLflow
writes to ``<results>/mlflow`` (``mlflow ui --backend-store-uri <results>/mlflow``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.sweep.config import ConfigError, SweepConfig
from harness.trial.progress import PREFIX
from harness.trial.spec import TrialSpec

log = logging.getLogger(__name__)

PROJECT = "wmbench"  # the W&B project every sweep logs to (its runs are grouped by sweep)
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the package it needs
SpecOf = Callable[[dict[str, Any]], TrialSpec]  # a Tune trial's config -> its spec
AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # "1": Tune adds no CSV, JSON or TBX logger of its own


def check_tracking(sweep: SweepConfig) -> None:
    """Refuse, before Ray starts, a tracker whose package is not installed."""
    package = PACKAGES.get(sweep.tracking)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"tracking: {sweep.tracking} needs the {package} package, which is not installed; "
            f"pip install -e '.[track]' (or pip install {package}), or set tracking=none"
        )


def tracking_dir(root: str) -> Path:
    """A local folder for the trackers' files: the results folder, or ./results when that is a remote URI."""
    if root.startswith("file://"):
        return Path(root.removeprefix("file://"))
    if "://" in root:
        log.warning("results_dir %s is remote: tracker files go to ./results instead", root)
        return Path("results").resolve()
    return Path(root)


def logger_callbacks(sweep: SweepConfig, root: str, spec_of: SpecOf) -> list[Any]:
    """Ray Tune's CSV and JSON loggers (Tune's own bookkeeping) and the sweep's tracker, if any: run Tune
    with these inside :func:`only_these_loggers`, so ``none`` writes no TensorBoard files."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    check_tracking(sweep)
    callbacks: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if sweep.tracking == "tensorboard":
        callbacks.append(TBXLoggerCallback())
    elif sweep.tracking == "wandb":
        callbacks.append(_wandb_callback(sweep, tracking_dir(root), spec_of))
    elif sweep.tracking == "mlflow":
        callbacks.append(_mlflow_callback(sweep, tracking_dir(root), spec_of))
    return callbacks


@contextlib.contextmanager
def only_these_loggers() -> Iterator[None]:
    """While Tune runs inside: no logger of its own beside those its callbacks name (then as before)."""
    previous = os.environ.get(AUTO_LOGGERS)
    os.environ[AUTO_LOGGERS] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(AUTO_LOGGERS, None)
        else:
            os.environ[AUTO_LOGGERS] = previous


def _wandb_callback(sweep: SweepConfig, folder: Path, spec_of: SpecOf) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback

    os.environ.setdefault("WANDB_MODE", "offline")  # no network by default; Ray's setup then asks for no API key
    folder.mkdir(parents=True, exist_ok=True)

    class TrialRuns(WandbLoggerCallback):
        """One W&B run per trial, named as Tune names the trial (its trial id), with its spec as the config."""

        def log_trial_start(self, trial: Any) -> None:
            self.kwargs["config"] = spec_of(trial.config).to_dict()
            super().log_trial_start(trial)

    return TrialRuns(
        project=PROJECT, group=sweep.name, excludes=[PREFIX.rstrip("/")], dir=str(folder),
        mode=os.environ["WANDB_MODE"], job_type="trial",
    )  # fmt: skip


def _mlflow_callback(sweep: SweepConfig, folder: Path, spec_of: SpecOf) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialRuns(MLflowLoggerCallback):
        """One MLflow run per trial (named by its trial id, Tune's trial name): its spec as the parameters."""

        def log_trial_start(self, trial: Any) -> None:
            super().log_trial_start(trial)
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=spec_of(trial.config).to_dict())

    return TrialRuns(
        tracking_uri=(folder / "mlflow").resolve().as_uri(), experiment_name=sweep.name, tags={"sweep": sweep.name}
    )
