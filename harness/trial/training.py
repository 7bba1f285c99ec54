"""One training loop for every zoo model, with collapse diagnostics and a checkpoint cache.

The loop follows LeWM's released recipe (REFERENCE.md, "Optimisation"): AdamW, linear
warm-up over the first 1% of steps then cosine decay, gradient clipping at 1.0, bf16
autocast on GPU. Every ``log_every`` steps it records each term of ``model.loss``, the
throughput and three collapse diagnostics of the latents. A loss that turns NaN or inf
raises :class:`TrainingDiverged`, which the trial turns into a ``failed`` row.

Train once, evaluate many (DESIGN.md): :func:`load_or_train` keys a checkpoint by a hash
of everything that determines the weights, so the same request never trains twice.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from models.blocks.sigreg import sigreg
from models.registry import build_model
from models.world_model import WorldModel
from tasks.data import cache_root

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # bump when the layout or the loop's semantics change (2: logging draws no RNG)
# TrainConfig fields that cannot change the trained weights; left out of checkpoint keys.
BOOKKEEPING_FIELDS = ("log_every", "num_workers")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"training diverged: the loss became {value} at step {step}")
        self.step = step
        self.value = value


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are LeWM's released ones (REFERENCE.md, "Optimisation")."""

    steps: int = 10_000
    batch_size: int = 128  # released code
    lr: float = 5e-5  # released code; tiny models on a CPU need ~1e-3 to move within minutes
    weight_decay: float = 1e-3  # released code (AdamW)
    warmup_frac: float = 0.01  # released code: linear warm-up over 1% of steps, then cosine
    grad_clip: float = 1.0  # released code
    log_every: int = 100
    bf16: bool = True  # released code trains in bf16; applied on CUDA only
    compile: bool = False  # torch.compile the model (GPU runs)
    num_workers: int = 0
    seed: int = 0


@dataclass
class TrainStats:
    """What a training run measured: throughput, loss at both ends, the log and final diagnostics."""

    steps: int
    seconds: float
    samples_per_s: float  # training windows per second, diagnostics excluded
    first_loss: float
    final_loss: float  # mean over the last FINAL_WINDOW steps
    history: list[dict[str, float]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)  # eff_rank, sigreg, latent_std, ...


def effective_rank(z: Tensor) -> float:
    """exp of the entropy of the normalised singular values of (samples, D) latents (RankMe).

    Not centred: a batch collapsed to one point has a single non-zero singular value, rank 1.
    """
    singular = torch.linalg.svdvals(z.float())
    p = singular / singular.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def latent_diagnostics(z: Tensor) -> dict[str, float]:
    """Collapse diagnostics of latents (B, T, N, D) or (samples, D): per-dim std, effective rank, SIGReg."""
    flat = z.reshape(-1, z.shape[-1]).float()  # (B·T·N, D)
    std = flat.std(dim=0)
    return {
        "latent_std": float(std.mean()),
        "latent_std_min": float(std.min()),
        "eff_rank": effective_rank(flat),
        # Fixed directions: the statistic compares across runs, and logging never draws from the
        # global RNG, so the trained weights do not depend on log_every (excluded from the cache key).
        "sigreg": float(sigreg(flat, generator=torch.Generator(flat.device).manual_seed(0))),
    }


def lr_factor(step: int, steps: int, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to zero."""
    warmup = max(1, round(warmup_frac * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def infinite_batches(
    dataset: torch.utils.data.Dataset, cfg: TrainConfig, device: torch.device
) -> Iterator[dict[str, Tensor]]:
    """Shuffled batches forever, reshuffled every epoch from the run's seed."""
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty; collect more episodes or use shorter windows")
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= cfg.batch_size,
        num_workers=cfg.num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    while True:
        for batch in loader:
            yield {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


FINAL_WINDOW = 20  # steps averaged into TrainStats.final_loss, whatever log_every is (a tenth of short runs)


class LogInterval:
    """Loss terms and samples since the last log record; :meth:`flush` turns them into one record.

    It also keeps the last ``FINAL_WINDOW`` losses, so the reported final loss means the
    same thing whatever the logging interval.
    """

    def __init__(self, steps: int) -> None:
        self.recent: collections.deque[float] = collections.deque(maxlen=max(1, min(FINAL_WINDOW, steps // 10)))
        self._reset()

    def _reset(self) -> None:
        self.terms: dict[str, list[float]] = {}
        self.samples = 0
        self.began = time.perf_counter()

    def add(self, terms: dict[str, float], samples: int) -> None:
        for name, value in terms.items():
            self.terms.setdefault(name, []).append(value)
        self.samples += samples
        self.recent.append(terms["loss"])

    @property
    def final_loss(self) -> float:
        """Mean loss over the last ``FINAL_WINDOW`` steps, or a tenth of a short run (NaN before the first)."""
        return sum(self.recent) / len(self.recent) if self.recent else math.nan

    def flush(self, step: int, lr: float) -> dict[str, float]:
        """The record for the steps up to ``step`` (1-based): mean of each term, lr, samples/s."""
        record = {"step": step, "lr": lr}
        record |= {name: sum(values) / len(values) for name, values in self.terms.items()}
        record["samples_per_s"] = self.samples / max(time.perf_counter() - self.began, 1e-9)
        self._reset()
        return record


def log_due(step: int, cfg: TrainConfig) -> bool:
    """Whether 0-based ``step`` ends a logging interval (every ``log_every`` steps, and the last)."""
    return (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps


def train(
    model: WorldModel,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    device: torch.device | str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> TrainStats:
    """Train ``model`` on windows from ``dataset`` for ``cfg.steps`` steps; ``log_fn`` gets every log record."""
    if cfg.steps < 1:
        raise ValueError(f"TrainConfig.steps must be at least 1, got {cfg.steps}")
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    model.prepare(dataset)
    model.train()
    step_fn = torch.compile(model.loss) if cfg.compile else model.loss
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.steps, cfg.warmup_frac))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    batches = infinite_batches(dataset, cfg, device)

    history: list[dict[str, float]] = []
    interval = LogInterval(cfg.steps)
    first_loss = math.nan
    diagnostics: dict[str, float] = {}
    began = time.perf_counter()
    train_seconds = 0.0  # time spent in training steps, diagnostics excluded
    for step in range(cfg.steps):
        step_began = time.perf_counter()
        batch = next(batches)
        with autocast:
            terms = step_fn(batch)
        loss = terms["loss"]
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(step, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if step == 0:
            first_loss = value
        interval.add({name: float(term.detach()) for name, term in terms.items()}, len(batch["pixels"]))
        train_seconds += time.perf_counter() - step_began

        if log_due(step, cfg):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record = interval.flush(step + 1, scheduler.get_last_lr()[0])
            diagnostics = latent_batch_diagnostics(model, batch)
            record |= diagnostics
            history.append(record)
            logger.info("step %d: %s", step + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
            if log_fn is not None:
                log_fn(record)

    seconds = time.perf_counter() - began
    return TrainStats(
        steps=cfg.steps,
        seconds=seconds,
        samples_per_s=cfg.steps * cfg.batch_size / max(train_seconds, 1e-9),
        first_loss=first_loss,
        final_loss=interval.final_loss,
        history=history,
        diagnostics=diagnostics,
    )


@torch.no_grad()
def latent_batch_diagnostics(model: WorldModel, batch: dict[str, Tensor]) -> dict[str, float]:
    """Collapse diagnostics of the encoder's latents for one batch, in eval mode."""
    was_training = model.training
    model.eval()
    z = model.encode(batch["pixels"])  # (B, T, N, D)
    model.train(was_training)
    return latent_diagnostics(rearrange(z, "b t n d -> (b t n) d"))


def checkpoint_key(
    model_name: str,
    size: str,
    model_config: dict[str, Any],
    dataset_key: str,
    cfg: TrainConfig,
    image_size: int | None = None,
    action_dim: int | None = None,
) -> str:
    """sha256 of a canonical JSON of everything that determines the trained weights.

    ``model_config`` is the model's resolved config, so an edited size preset never loads
    weights trained under the old one, and an override equal to the preset changes nothing.
    """
    train_fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in BOOKKEEPING_FIELDS}
    recipe = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "size": size,
        "image_size": image_size,
        "action_dim": action_dim,
        "model_config": model_config,
        "dataset": dataset_key,
        "train": train_fields,
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
    dataset: torch.utils.data.Dataset,
    dataset_key: str,
    cfg: TrainConfig,
    device: torch.device | str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    world_size: int = 1,
) -> tuple[WorldModel, TrainStats]:
    """The trained model (in eval mode) and its stats: from the checkpoint cache, else trained and cached.

    Checkpoints live in ``cache_root()/checkpoints/<key>.pt`` as ``{state_dict, config, stats}``,
    written atomically and read back with ``weights_only=True``. With ``world_size`` > 1 the
    model trains over that many processes with DDP (harness/distributed.py; SIGReg all-reduced).
    """
    model = build_model(model_name, size, image_size, action_dim, **overrides)
    key = checkpoint_key(model_name, size, resolved_config(model), dataset_key, cfg, image_size, action_dim)
    if world_size > 1:  # a different batch split is a different recipe
        key = hashlib.sha256(f"{key}:ddp{world_size}".encode()).hexdigest()
    path = cache_root() / "checkpoints" / f"{key}.pt"
    if path.exists():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(checkpoint["state_dict"])
            logger.info("loaded cached checkpoint %s", path)
            return model.to(device).eval(), TrainStats(**checkpoint["stats"])
        except (RuntimeError, KeyError, TypeError, EOFError, ValueError) as error:
            logger.warning("checkpoint %s cannot be read (%s); training again", path, error)
            model = build_model(model_name, size, image_size, action_dim, **overrides)

    if world_size > 1:
        from harness.trial.distributed import train_ddp

        builder = functools.partial(build_model, model_name, size, image_size, action_dim, **overrides)
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        state, stats = train_ddp(builder, dataset, cfg, world_size, backend)
        model.load_state_dict(state)
        model.to(device)
        for record in stats.history if log_fn is not None else []:
            log_fn(record)
    else:
        stats = train(model, dataset, cfg, device, log_fn)
    config = {
        "model": model_name,
        "size": size,
        "image_size": image_size,
        "action_dim": action_dim,
        "overrides": json.loads(json.dumps(overrides, default=str)),
        "dataset_key": dataset_key,
        "train": dataclasses.asdict(cfg),
    }
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    _save_atomic({"state_dict": state_dict, "config": config, "stats": dataclasses.asdict(stats)}, path)
    return model.eval(), stats


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
