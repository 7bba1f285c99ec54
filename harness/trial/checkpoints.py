"""The checkpoint cache: train once, evaluate many (DESIGN.md "Rules").

:func:`load_or_train` keys a checkpoint by a hash of everything that determines the trained
weights (model, resolved config, data, windows, recipe, seed, number of processes), so the
same request never trains twice. Each file carries the sha256 of its contents; a file that cannot be
read, fails that check or does not fit the model is trained again (with a warning naming it), never trusted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from harness.trial.distributed import train_ddp
from harness.trial.training import TrainConfig, TrainStats, latent_batch_diagnostics, train
from models.registry import build_model
from models.world_model import WorldModel
from tasks.data import cache_root

logger = logging.getLogger(__name__)

# Bump when the layout or the loop's semantics change (2: logging draws no RNG; 3: the seed and
# num_frames are keyed explicitly, the model is built right after seeding, world_size is in the recipe;
# 4: models train on actions standardised per dataset, tasks.scaler).
CHECKPOINT_FORMAT = 4
# TrainConfig fields that cannot change the trained weights; left out of checkpoint keys.
BOOKKEEPING_FIELDS = ("log_every", "num_workers")


def checkpoint_key(
    model_name: str,
    size: str,
    image_size: int,
    action_dim: int,
    model_config: dict[str, Any],
    dataset_key: str,
    cfg: TrainConfig,
    seed: int,
    world_size: int = 1,
) -> str:
    """sha256 of a canonical JSON of everything that determines the trained weights.

    ``model_config`` is the model's resolved config, so an edited size preset never loads
    weights trained under the old one, and an override equal to the preset changes nothing.
    ``world_size`` is there because a different batch split is a different recipe.
    """
    train_fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in BOOKKEEPING_FIELDS}
    for name in ("cpu_bf16", "shift_augment"):  # added later: left out while off, so old checkpoints keep their keys
        if not train_fields[name]:
            del train_fields[name]
    recipe = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "size": size,
        "image_size": image_size,
        "action_dim": action_dim,
        "model_config": model_config,
        "dataset": dataset_key,
        "train": train_fields,
        "seed": seed,
        "world_size": world_size,
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def resolved_config(model: WorldModel) -> dict[str, Any]:
    """The model's full config as a dict: what its builder made of the size preset and overrides."""
    if not dataclasses.is_dataclass(model.config):
        raise TypeError(f"{type(model).__name__}.config must be its config dataclass, got {model.config!r}")
    return dataclasses.asdict(model.config)


def load_or_train(
    model_name: str,
    size: str,
    image_size: int,
    action_dim: int,
    overrides: dict[str, Any],
    dataset: Dataset,
    dataset_key: str,
    cfg: TrainConfig,
    seed: int,
    device: torch.device | str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    world_size: int = 1,
) -> tuple[WorldModel, TrainStats]:
    """The trained model (in eval mode) and its stats: from the checkpoint cache, else trained and cached.

    The model is built right after ``torch.manual_seed(seed)``, so its initial weights follow
    from the key alone. Checkpoints live in ``cache_root()/checkpoints/<key>.pt`` as
    ``{state_dict, config, stats, sha256}``, written atomically, read back with ``weights_only=True``
    and checked against the sha256.
    With ``world_size`` > 1 the model trains over that many processes with DDP
    (harness/trial/distributed.py; SIGReg all-reduced), and ``log_fn`` gets rank 0's records
    once training ends.
    """
    builder = functools.partial(build_model, model_name, size, image_size, action_dim, **overrides)
    torch.manual_seed(seed)
    model = builder()
    if model.pretrained:  # every weight loaded by the builder (e.g. a stable-worldmodel checkpoint): not trained
        return model.to(device).eval(), untrained_stats(model, dataset, cfg.batch_size, device)
    key = checkpoint_key(
        model_name, size, image_size, action_dim, resolved_config(model), dataset_key, cfg, seed, world_size
    )
    path = cache_root() / "checkpoints" / f"{key}.pt"
    if path.exists():
        cached = _load_verified(path, model)
        if cached is not None:
            logger.info("loaded cached checkpoint %s", path)
            return model.to(device).eval(), cached
        torch.manual_seed(seed)  # the model may hold part of the damaged file: build it afresh, as the key says
        model = builder()

    if world_size > 1:
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        state, stats = train_ddp(builder, dataset, cfg, seed, world_size, backend)
        model.load_state_dict(state)
        model.to(device)
        for record in stats.history if log_fn is not None else []:
            log_fn(record)
    else:
        stats = train(model, dataset, cfg, device, seed, log_fn)
    config = {
        "model": model_name,
        "size": size,
        "image_size": image_size,
        "action_dim": action_dim,
        "overrides": json.loads(json.dumps(overrides, default=str)),
        "dataset_key": dataset_key,
        "train": dataclasses.asdict(cfg),
        "seed": seed,
        "world_size": world_size,
    }
    scaler = getattr(dataset, "scaler", None)  # the action units the weights were trained in
    if scaler is not None:
        config["action_scaler"] = scaler.to_dict()
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    recorded = dataclasses.asdict(stats)
    payload = {"state_dict": state_dict, "config": config, "stats": recorded}
    _save_atomic(payload | {"sha256": _digest(state_dict, config, recorded)}, path)
    return model.eval(), stats


def _digest(state_dict: dict[str, torch.Tensor], config: dict[str, Any], stats: dict[str, Any]) -> str:
    """sha256 of a checkpoint's contents: each tensor's name, dtype, shape and bytes, then its config and stats."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    digest.update(json.dumps({"config": config, "stats": stats}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _load_verified(path: Path, model: WorldModel) -> TrainStats | None:
    """Load the checkpoint at ``path`` into ``model`` and return its stats; None, with a warning naming the file,
    when the file cannot be read, does not match the sha256 written with it, or does not fit the model.

    torch.load alone is not enough: bytes flipped inside a tensor's data load without complaint.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state_dict, config, stats = checkpoint["state_dict"], checkpoint["config"], checkpoint["stats"]
        if "sha256" not in checkpoint:
            raise ValueError("it carries no sha256 (written before checkpoints were checksummed)")
        if checkpoint["sha256"] != _digest(state_dict, config, stats):
            raise ValueError("its contents do not match the sha256 written with them")
        model.load_state_dict(state_dict)
        return TrainStats(**stats)
    except Exception as error:  # noqa: BLE001 - a damaged file fails anywhere: zip, pickle, OS, keys, shapes
        reason = str(error).splitlines()[0] if str(error) else "empty or cut short"
        logger.warning(
            "cached checkpoint %s is damaged (%s: %s); training it again", path, type(error).__name__, reason
        )
        return None


def untrained_stats(model: WorldModel, dataset: Dataset, batch_size: int, device: torch.device | str) -> TrainStats:
    """The stats of a model evaluated as loaded: no steps, and the latent diagnostics of one batch of ``dataset``."""
    count = min(batch_size, len(dataset))
    windows = [dataset[index] for index in range(count)]
    batch = {name: torch.stack([window[name] for window in windows]).to(device) for name in windows[0]}
    with torch.no_grad():
        diagnostics = latent_batch_diagnostics(model, batch)
    return TrainStats(steps=0, seconds=0.0, samples_per_s=math.nan, first_loss=math.nan, final_loss=math.nan,
                      diagnostics=diagnostics)  # fmt: skip


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
