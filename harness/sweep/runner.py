"""The sweep: expanded trials scheduled by Ray Tune, one GPU (or one CPU slot) each.

Finished trials are recognised by their Parquet file (deterministic trial ids), so
an interrupted sweep resumed with ``--resume`` runs only what is missing and no
row is written twice. Ray's FailureConfig retries a trial whose worker died.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from harness.report import results
from harness.sweep import progress, tracking
from harness.sweep.config import ConfigError, SweepConfig, expand_trials
from harness.trial.parts import trial_data
from harness.trial.progress import Progress, ProgressThrottle
from harness.trial.spec import TrialSpec
from harness.trial.trial import execute_trial
from tasks import ray_cluster

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    """What a sweep will do, printed before it runs (and all that ``--dry-run`` does)."""

    root: str
    trials: list[TrialSpec]
    done: list[str]  # trial ids with results already
    searched: bool  # an Optuna search: trials are proposed as it runs

    @property
    def pending(self) -> list[TrialSpec]:
        return [t for t in self.trials if t.trial_id not in self.done]

    def describe(self, resources: dict[str, float]) -> str:
        lines = [f"results: {self.root}", f"resources per trial: {resources}"]
        if self.searched:
            lines.append(f"search: {len(self.trials)} base trial(s), each searched by Optuna")
        lines.append(f"trials: {len(self.trials)} ({len(self.done)} finished, {len(self.pending)} to run)")
        for trial in self.trials:
            state = "done" if trial.trial_id in self.done else "todo"
            lines.append(f"  [{state}] {trial.trial_id}")
        return "\n".join(lines)


def results_root(sweep: SweepConfig) -> str:
    """The results folder as an absolute path (Ray workers run elsewhere), or a filesystem URI."""
    if "://" in sweep.results_dir:
        try:
            pafs.FileSystem.from_uri(sweep.results_dir)
        except (ValueError, OSError) as error:
            raise ConfigError(
                f"results_dir {sweep.results_dir!r} is not a usable filesystem URI ({error}); "
                "use file:///ABSOLUTE/PATH or s3://BUCKET/PATH"
            ) from None
        return sweep.results_dir
    return str(Path(sweep.results_dir).resolve())


@contextlib.contextmanager
def driver_lock(sweep: SweepConfig) -> Iterator[None]:
    """Hold the results folder's driver lock: a second driver on the same folder exits at once, naming the first.

    A local folder only (``flock`` on ``<root>/.driver.lock``); a URI results_dir is not locked.
    """
    root = results_root(sweep)
    if "://" in root:
        log.warning("results_dir %s is a URI: nothing stops a second driver on it from running the same trials", root)
        yield
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".driver.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConfigError(
                f"another driver ({holder}) is running a sweep on {root}; wait for it to end, "
                "or set results_dir=... for a folder of your own"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def plan_sweep(sweep: SweepConfig) -> SweepPlan:
    """The sweep's trials and which of them already have results."""
    root = results_root(sweep)
    trials = expand_trials(sweep)
    problems = {t.trial_id: results.verify_trial(root, t.trial_id) for t in trials}
    for trial_id, problem in problems.items():
        if problem not in (None, "not run"):
            log.warning("running %s again: %s", trial_id, problem)
    done = [trial_id for trial_id, problem in problems.items() if problem is None]
    return SweepPlan(root, trials, done, searched=bool(sweep.search.space))


def trial_resources(sweep: SweepConfig, cluster_gpus: float) -> dict[str, float]:
    """``{cpu, gpu}`` when the cluster has GPUs (and the sweep allows them), ``{cpu}`` otherwise."""
    policy = sweep.resources.gpu
    if policy == "require" and cluster_gpus == 0:
        raise ConfigError("resources.gpu is 'require' but the Ray cluster has no GPUs; use 'auto' to fall back to CPU")
    if policy == "never" or cluster_gpus == 0:
        if policy == "auto":
            log.info("no GPU in the cluster: each trial gets %d CPU slot(s)", sweep.resources.cpu)
        return {"cpu": sweep.resources.cpu}
    gpus = sweep.resources.gpus_per_trial if sweep.resources.gpus_per_trial > 1 else sweep.resources.gpu_fraction
    return {"cpu": sweep.resources.cpu, "gpu": gpus}


def _trainable(config: dict[str, Any], trials: dict[str, TrialSpec], root: str) -> None:
    """The Ray Tune function trainable: one trial, reporting progress, then its summary."""
    import ray
    from ray import tune

    spec = spec_of(config, trials)
    gpus = ray.get_gpu_ids()
    throttle = ProgressThrottle()  # every report is a Tune iteration: progress alone at most every few seconds

    def report(metrics: dict[str, Any]) -> None:
        if throttle.admit(metrics):
            tune.report({k: v for k, v in metrics.items() if isinstance(v, int | float | str)})

    started = time.perf_counter()
    rows = execute_trial(spec, root, device="cuda" if gpus else "cpu", world_size=max(1, len(gpus)), report=report)
    ok = [r for r in rows if r.status == "ok"]
    ended = Progress("done") if ok else Progress("failed", error=str(rows[0].error).splitlines()[0])
    tune.report(
        {
            "status_ok": float(bool(ok)),
            "success_rate": float(ok[0].success_rate) if ok else 0.0,
            "trial_seconds": time.perf_counter() - started,
            **ended.metrics(),
        }
    )


def spec_of(config: dict[str, Any], trials: dict[str, TrialSpec]) -> TrialSpec:
    """The spec a Tune trial's config names (a searched sample is a trial of its own id)."""
    spec = trials[config["trial_id"]]
    return spec.with_values(config["searched"]) if "searched" in config else spec


def _trial_naming(trials: dict[str, TrialSpec]) -> dict[str, Any]:
    """TuneConfig's naming: a Tune trial is named (and its folder) by its trial id, not ``_trainable_<hash>``."""

    def name(trial) -> str:
        return spec_of(trial.config, trials).trial_id

    def folder(trial) -> str:  # a searched sample may repeat another's values: Tune's id keeps folders apart
        return f"{name(trial)}_{trial.trial_id}" if "searched" in trial.config else name(trial)

    return {"trial_name_creator": name, "trial_dirname_creator": folder}


class SweepStopped(RuntimeError):
    """Ray Tune's control loop itself ended with an error (not one trial's): finished trials are on disk."""


@dataclass
class SweepOutcome:
    wall_seconds: float
    trial_seconds: float  # the sum of trial wall-clocks
    slots: int  # trials that could run at once
    failed: int
    # Trial id -> its error in one line, for each trial Ray ended with an error (its worker died, or the trial
    # raised outside the rows it records, e.g. its rows could not be written): such a trial has no rows.
    errors: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Wall-clock against the trial time the slots could have absorbed: the rest is Ray's overhead."""
        ideal = self.trial_seconds / self.slots
        return (
            f"sweep wall-clock {self.wall_seconds:.1f} s; trials {self.trial_seconds:.1f} s summed over "
            f"{self.slots} slot(s), i.e. {ideal:.1f} s if perfectly packed; overhead and idle slots "
            f"{self.wall_seconds - ideal:.1f} s"
        )


def collect_datasets(trials: list[TrialSpec]) -> None:
    """Every dataset the trials need, collected once before they start: one Ray task per shard over the
    cluster's CPUs, written to this driver's cache, which every trial sharing that cache then reads."""
    recipes: dict[str, TrialSpec] = {}
    for trial in trials:
        key = json.dumps({"task": trial.to_dict()["task"], "data": trial.to_dict()["data"]}, sort_keys=True)
        recipes.setdefault(key, trial)
    for trial in recipes.values():
        try:
            trial_data(trial, backend="ray", progress=True)
        except Exception as error:  # the trials collect again themselves and record the error in their rows
            log.warning(
                "collecting the data of %s failed (%s); its trials will record the error",
                trial.trial_id,
                ray_cluster.one_line(error),
            )


def run_sweep(
    sweep: SweepConfig, plan: SweepPlan, address: str | None = None, verbose: int = 1, live: bool | None = None
) -> SweepOutcome:
    """Run the plan's pending trials on Ray Tune (local Ray when no address is given).

    ``verbose`` 1 shows wmbench's per-trial progress only (in place where stdout is a terminal, unless ``live``
    says otherwise); 2 (``-v``) adds Ray's status table and the trials' own logs; 3 (``-vv``) Ray's verbose table.
    """
    import ray
    from ray import tune

    by_id = {trial.trial_id: trial for trial in plan.trials}
    # Before Ray starts: a tracker's missing package stops the sweep, and its settings reach Ray's workers.
    loggers = tracking.logger_callbacks(sweep, plan.root, functools.partial(spec_of, trials=by_id))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # Ctrl-C raises KeyboardInterrupt here (the command line says how far the sweep got and exits 130); Tune's own
    # handler would instead end fit() as if the sweep were done and point at Tuner.restore, which --resume replaces.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    started = time.perf_counter()
    address = ray_cluster.connect(address, log_to_driver=verbose > 1)
    cluster = ray.cluster_resources()
    resources = trial_resources(sweep, cluster.get("GPU", 0))
    cpus = cluster.get("CPU", 0)
    if address == "local" and resources["cpu"] > cpus:  # a joined cluster may autoscale; this one cannot
        ray.shutdown()
        raise ConfigError(
            f"resources.cpu is {resources['cpu']} but this machine's Ray has {cpus:g} CPU(s): no trial could "
            f"start; pass resources.cpu={max(int(cpus), 1)} (or run on a cluster with --address)"
        )
    collect_datasets(plan.pending if not plan.searched else plan.trials)
    trainable = tune.with_resources(tune.with_parameters(_trainable, trials=by_id, root=plan.root), resources)
    if verbose <= 1:  # Ray's slow-operation warnings (a loaded machine, a tracker's actor starting) only with -v
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    waiting = [] if plan.searched else [trial.trial_id for trial in plan.pending]
    shown = progress.view(plan.trials, waiting, live=False if verbose > 1 else live)  # -v: lines between Ray's tables
    run_config = tune.RunConfig(
        name=f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=f"{plan.root.rstrip('/')}/ray" if "://" in plan.root else str(Path(plan.root, "ray")),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        callbacks=[shown, *loggers],
        verbose=min(verbose - 1, 2) if verbose > 1 else 0,  # Ray's own table only with -v
    )
    naming = _trial_naming(by_id)
    if plan.searched:
        tuner = _search_tuner(sweep, plan, trainable, run_config, naming)
    else:
        param_space = {"trial_id": tune.grid_search([trial.trial_id for trial in plan.pending])}
        # reuse_actors: a slot's next trial runs in the process its last one ran in, instead of a new one that
        # imports torch and the harness again (3-4 s between trials); each trial seeds itself and resets its peak.
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(reuse_actors=True, **naming),
            run_config=run_config,
        )
    try:
        with tracking.only_these_loggers():
            grid = tuner.fit()
    except RuntimeError as error:  # Tune's own loop died, e.g. Ray's memory monitor killed a worker it did not expect
        raise SweepStopped(ray_cluster.one_line(error)) from error
    finally:
        shown.close()  # an interrupted sweep leaves the terminal as it found it
    frame = grid.get_dataframe()
    trial_seconds = float(frame["trial_seconds"].sum()) if "trial_seconds" in frame else 0.0
    errors = {
        spec_of(result.config, by_id).trial_id: ray_cluster.one_line(result.error) for result in grid if result.error
    }
    capacity = int(ray.cluster_resources().get("CPU", 1) // max(resources["cpu"], 1))
    slots = max(1, min(len(plan.pending) if not plan.searched else sweep.search.num_samples, capacity))
    return SweepOutcome(time.perf_counter() - started, trial_seconds, slots, len(errors), errors)


def _search_tuner(sweep: SweepConfig, plan: SweepPlan, trainable, run_config, naming: dict[str, Any]):
    """An Optuna search (through Ray Tune's OptunaSearch) over ``search.space`` for each base trial."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    space = {}
    for key, spec in sweep.search.space.items():
        (kind, bounds), *_ = spec.items()
        if kind not in ("uniform", "loguniform"):
            raise ConfigError(f"search.space.{key}: {kind!r} is not a distribution; use uniform or loguniform")
        space[key] = getattr(tune, kind)(*bounds)
    if len(plan.trials) != 1:
        raise ConfigError("search.space searches one base trial: give one task, one model and one seed")
    searcher = OptunaSearch(metric=sweep.search.metric, mode=sweep.search.mode)
    return tune.Tuner(
        trainable,
        param_space={"trial_id": plan.trials[0].trial_id, "searched": space},
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=sweep.search.num_samples, reuse_actors=True, **naming
        ),
        run_config=run_config,
    )
