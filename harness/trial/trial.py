"""One trial: data (cached) -> model (trained or loaded) -> every condition evaluated -> rows.

A plain function of a JSON-able config that knows nothing of the sweep around it,
so it runs, and is tested, without Ray. :func:`execute_trial` adds what a sweep
needs: a failed trial becomes a ``failed`` row, and the rows are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import resource
import subprocess
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.eval.cases import make_cases
from harness.eval.evaluation import (
    Controller,
    EpisodeResult,
    ModelController,
    OracleController,
    RandomController,
    run_episodes,
    summarize,
)
from harness.eval.planners import make_optimizer
from harness.eval.probes import probe
from harness.eval.protocol import Protocol
from harness.eval.surprise import evaluate_surprise
from harness.report import results
from harness.trial.training import TrainConfig, load_or_train
from tasks.base import make_task
from tasks.conditions import Condition
from tasks.data import WindowDataset, collect

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]
HELDOUT_SEED_OFFSET = 1_000_003  # held-out episodes come from a different collection seed
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "ray", "numpy", "pyarrow", "gymnasium", "gym-pusht", "ogbench", "mujoco", "dm-control", "wmbench")


def trial_id(config: dict[str, Any]) -> str:
    """A readable, deterministic id: the same trial config always gets the same id (resume relies on it)."""
    bookkeeping = ("sweep", "trial_id", "variant", "results_root", "device", "devices")
    identity = {k: v for k, v in config.items() if k not in bookkeeping}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['task']['name']}-{config['model']['name']}-s{config['seed']}-{digest}"


def run_trial(config: dict[str, Any], report: Report | None = None) -> tuple[list[dict], list[dict]]:
    """Run one trial; returns (condition rows, episode rows). Raises on any failure."""
    report = report or (lambda metrics: None)
    started = datetime.now(UTC)
    device = torch.device(config.get("device", "cpu"))
    torch.manual_seed(config["seed"])

    task = make_task(config["task"]["name"], image_size=config["task"]["image_size"], **config["task"]["options"])
    protocol = Protocol(**config["protocol"]).resolved(task.default_history, task.default_frameskip)
    data_cfg = config["data"]

    def dataset(episodes: int, seed: int):
        return collect(task, data_cfg["policy"], episodes, data_cfg["steps"], seed, data_cfg["noise"],
                       workers=data_cfg["workers"], progress=False)  # fmt: skip

    data = dataset(data_cfg["episodes"], data_cfg["seed"])
    source = data
    if protocol.split == "heldout":
        source = dataset(data_cfg["heldout_episodes"], data_cfg["seed"] + HELDOUT_SEED_OFFSET)
    cases, resampled = make_cases(task, source, protocol)

    model_cfg, planner_cfg = config["model"], config["planner"]
    optimizer = make_optimizer(
        planner_cfg["name"], planner_cfg["samples"], planner_cfg["iterations"], planner_cfg["elites"],
        planner_cfg["init_std"], planner_cfg["temperature"],
    )  # fmt: skip
    train_fields: dict[str, Any] = {}
    if model_cfg["name"] == "random":
        controller: Controller = RandomController(
            planner_cfg["horizon"], protocol.frameskip * task.action_dim, config["seed"]
        )
        describe = {"encoder": "none"}
    elif model_cfg["name"] == "oracle":
        controller = OracleController(task, optimizer, planner_cfg["horizon"], protocol.frameskip, config["seed"])
        describe = {"encoder": controller.kind}
    else:
        train = dict(config["train"])
        windows = WindowDataset(data, num_frames=train.pop("num_frames"), frameskip=protocol.frameskip)
        overrides = {"history": protocol.history, **model_cfg["overrides"]}  # planning context = training context
        model, stats = load_or_train(
            model_cfg["name"], model_cfg["size"], task.image_size, protocol.frameskip * task.action_dim,
            overrides, windows, data.key, TrainConfig(**train, seed=config["seed"]), device, log_fn=report,
            world_size=config.get("devices", 1),
        )  # fmt: skip
        controller = ModelController(
            model_cfg["name"], model, optimizer, planner_cfg["horizon"], planner_cfg["receding"], config["seed"],
            device, planner_cfg["chunk"],
        )  # fmt: skip
        describe = model.describe()
        if config.get("diagnostics", True):
            train_fields |= model_diagnostics(model, task, data, source, protocol, windows, config["seed"], device)
        train_fields |= {
            "tokens_per_frame": model.tokens_per_frame,
            "num_params": model.num_params,
            "train_steps": stats.steps,
            "train_seconds": stats.seconds,
            "samples_per_s": stats.samples_per_s,
            "first_loss": stats.first_loss,
            "final_loss": stats.final_loss,
            "latent_eff_rank": stats.diagnostics.get("eff_rank"),
            "sigreg_stat": stats.diagnostics.get("sigreg"),
        }

    condition_rows, episode_rows = [], []
    for spec in config["conditions"]:
        condition = Condition(**spec)
        episodes = run_episodes(
            controller, task, cases, protocol, condition, planner_cfg["receding"], planner_cfg["batch_episodes"]
        )
        summary = summarize(episodes)
        report({"condition": condition.name, **summary})
        log.info("%s %s: success %.2f", config["task"]["name"], condition.name, summary["success_rate"])
        condition_rows.append(
            {
                **_identity(config, protocol),
                **train_fields,
                **summary,
                "status": "ok",
                "condition": condition.name,
                **condition.params(),
                "solved_starts_resampled": resampled,
                "dataset_key": data.key,
                "data_policy": f"{data_cfg['policy']}(noise={data_cfg['noise']:g})",
                "data_policy_success": data.info.get("policy_success_rate"),
                "case_split": protocol.split,
                "encoder": describe.get("encoder", ""),
                "started_at": started,
                "finished_at": datetime.now(UTC),
            }
        )
        episode_rows += _episode_rows(config, condition, protocol, episodes)
    peak = peak_memory_mb(device)
    for row in condition_rows:
        row["peak_mem_mb"] = peak
    return condition_rows, episode_rows


def model_diagnostics(model, task, data, heldout, protocol: Protocol, windows, seed: int, device) -> dict[str, float]:
    """What a model learned, beside how it plans: probe R² of the true state, surprise AUROC."""
    heldout_windows = WindowDataset(heldout, num_frames=windows.num_frames, frameskip=protocol.frameskip)
    probed = probe(model, windows, heldout_windows, device, max_frames=5_000)
    surprise = evaluate_surprise(model, task, heldout, seed=seed, device=device, frameskip=protocol.frameskip)
    log.info("probe R² %.3f, surprise AUROC %.3f", probed["r2"], surprise["surprise_auroc"])
    return {"probe_r2": probed["r2"], "surprise_auroc": surprise["surprise_auroc"]}


def execute_trial(config: dict[str, Any], root: str, report: Report | None = None) -> list[dict]:
    """Run a trial and write its rows; any exception becomes one ``failed`` row with the error."""
    started = datetime.now(UTC)
    try:
        condition_rows, episode_rows = run_trial(config, report)
    except Exception as error:  # noqa: BLE001 - a sweep records every failure and goes on
        log.exception("trial %s failed", config["trial_id"])
        protocol = _resolved_protocol(config)
        condition_rows, episode_rows = (
            [
                {
                    **_identity(config, protocol),
                    "status": "failed",
                    "error": f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}",
                    "started_at": started,
                    "finished_at": datetime.now(UTC),
                }
            ],
            [],
        )
    results.write_trial(root, config["trial_id"], condition_rows, episode_rows)
    return condition_rows


def _resolved_protocol(config: dict[str, Any]) -> Protocol:
    """The trial's protocol with the task's defaults, so a failed row sits beside its siblings."""
    protocol = Protocol(**config["protocol"])
    try:
        task_class = type(make_task(config["task"]["name"], image_size=config["task"]["image_size"]))
    except Exception:  # noqa: BLE001 - the task itself may be what failed
        return protocol
    return protocol.resolved(task_class.default_history, task_class.default_frameskip)


def _identity(config: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """The columns that make a row reproducible from itself."""
    return {
        "sweep": config["sweep"],
        "trial_id": config["trial_id"],
        "task": config["task"]["name"],
        "model": config["model"]["name"],
        "variant": config.get("variant", ""),
        "seed": config["seed"],
        "config": json.dumps(config, sort_keys=True),
        "protocol": protocol.to_json(),
        "protocol_hash": protocol.hash(),
        "node": node_name(),
        "device": device_name(torch.device(config.get("device", "cpu"))),
        "git_sha": git_sha(),
        "versions": json.dumps(versions(), sort_keys=True),
        "packages_hash": packages_hash(),
        "command": " ".join(sys.argv),
    }


def _episode_rows(config, condition: Condition, protocol: Protocol, episodes: list[EpisodeResult]) -> list[dict]:
    return [
        {
            "trial_id": config["trial_id"],
            "task": config["task"]["name"],
            "model": config["model"]["name"],
            "seed": config["seed"],
            "condition": condition.name,
            "episode": result.case.index,
            "case_seed": result.case.case_seed,
            "start": result.case.start.astype(float).tolist(),
            "goal": result.case.goal.astype(float).tolist(),
            "success": result.success,
            "final_distance": result.final_distance,
            "steps": result.steps,
            "plan_ms": float(sorted(result.plan_ms)[len(result.plan_ms) // 2]) if result.plan_ms else None,
            "start_solved": result.case.start_solved,
            "protocol_hash": protocol.hash(),
        }
        for result in episodes
    ]


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


@cache
def versions() -> dict[str, str]:
    """Installed versions of the packages a figure depends on, plus Python."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
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


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocation on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trial_configs(trials: list[dict[str, Any]], root: str, device: str) -> list[dict[str, Any]]:
    """Stamp each expanded trial with its id, results root and device."""
    return [{**trial, "trial_id": trial_id(trial), "results_root": root, "device": device} for trial in trials]
