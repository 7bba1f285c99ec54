"""One training loop for every zoo model, on one process or as one rank of a DDP group, with collapse diagnostics.

The loop follows LeWM's released recipe (REFERENCE.md, "Optimisation (released code)"): AdamW,
linear warm-up over the first 1% of steps then cosine decay, gradient clipping at 1.0, bf16
autocast on GPUs, and on CPUs with bf16 units when ``cpu_bf16`` asks (harness/eval/precision.py). One optimisation step
is a :class:`TrainStep`, which the speed benchmark (harness/bench/speed.py) times as trials run
it. Every ``log_every`` steps the loop records each term of ``model.loss``, the throughput and
three collapse diagnostics of the latents. A loss that turns NaN or inf raises
:class:`TrainingDiverged`, which the trial turns into a ``failed`` row.

Multi-GPU training is an argument of the same loop, as in nanoGPT: given a
:class:`DistributedContext`, each process trains on its share of every global batch, DDP
averages the gradients, SIGReg is formed on the global batch (DESIGN.md "Rules") and the
loss terms are averaged over the group. harness/trial/distributed.py starts the processes.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, default_collate

from harness.eval.precision import autocast_for, resolve_precision
from models.blocks.sigreg import SIGReg, sigreg
from models.world_model import WorldModel

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"training diverged: the loss became {value} at step {step}")
        self.step = step
        self.value = value


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the sweep YAML's ``train:`` block); defaults are LeWM's released ones.

    REFERENCE.md, "Optimisation (released code)". The seed is the trial's and is passed to
    :func:`train` on its own.
    """

    steps: int = 10_000  # ours: the paper trains 10 epochs per environment, which depends on the dataset size
    batch_size: int = 128  # released code; the global batch when training over several processes
    num_frames: int = 4  # frames per training window, history + prediction (LeWM: 4)
    lr: float = 5e-5  # released code; tiny models on a CPU need ~1e-3 to move within minutes
    weight_decay: float = 1e-3  # released code (AdamW)
    warmup_frac: float = 0.01  # released code: linear warm-up over 1% of steps, then cosine
    grad_clip: float = 1.0  # released code; 0 turns clipping off
    bf16: bool = True  # released code trains in bf16 on GPUs
    # ours: bf16 autocast on CPUs with bf16 units (AMX / AVX-512 bf16) too. Off by default, so the CPU
    # figures in the README keep the fp32 training they were measured with; `train.cpu_bf16=true` opts in.
    cpu_bf16: bool = False
    # ours: DrQ's random shift (Yarats et al., ICLR 2021: pad 4 at 84 px): each training window is padded by
    # this many pixels and cropped back at a random offset, the same for all its frames; 0 turns it off.
    shift_augment: int = 0
    compile: bool = False  # ours: torch.compile the loss (forward and backward)
    log_every: int = 100  # ours: bookkeeping, does not change the weights
    num_workers: int = 0  # ours: DataLoader processes, does not change the weights

    def __post_init__(self) -> None:
        problems = []  # every bad field, one line each: the sweep loader reports them all at once
        minimums = {"steps": 1, "batch_size": 1, "log_every": 1, "num_workers": 0, "num_frames": 2, "shift_augment": 0}
        for name, least in minimums.items():
            if getattr(self, name) < least:
                problems.append(f"train.{name} must be at least {least}, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            problems.append(f"train.lr must be positive and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            problems.append(f"train.weight_decay must be zero or positive and finite, got {self.weight_decay}")
        if not 0 <= self.warmup_frac <= 1:
            problems.append(f"train.warmup_frac must lie in [0, 1], got {self.warmup_frac}")
        if not 0 <= self.grad_clip < math.inf:
            problems.append(f"train.grad_clip must be zero (no clipping) or positive and finite, got {self.grad_clip}")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in an initialised process group: :func:`train` runs as rank ``rank`` of ``world_size``."""

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {self.rank} of {self.world_size}")


@dataclass
class TrainStats:
    """What a training run measured: throughput, loss at both ends, the log and final diagnostics."""

    steps: int
    seconds: float
    samples_per_s: float  # training windows per second (the whole group's), diagnostics excluded
    first_loss: float
    final_loss: float  # mean over the last FINAL_WINDOW steps
    history: list[dict[str, float]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)  # eff_rank, sigreg, latent_std, ...
    precision: str | None = None  # "fp32" | "bf16": what the steps ran in (None: a checkpoint from before it was kept)


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


@torch.no_grad()
def latent_batch_diagnostics(model: WorldModel, batch: dict[str, Tensor]) -> dict[str, float]:
    """Collapse diagnostics of the encoder's latents for one batch, in eval mode."""
    was_training = model.training
    model.eval()
    z = model.encode(batch["pixels"])  # (B, T, N, D)
    model.train(was_training)
    return latent_diagnostics(rearrange(z, "b t n d -> (b t n) d"))


def lr_factor(step: int, steps: int, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to zero."""
    warmup = max(1, round(warmup_frac * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def local_batch_size(cfg: TrainConfig, num_windows: int, world_size: int) -> int:
    """Each process's share of the global batch; raises ValueError when the batch or the data cannot be split."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if cfg.batch_size % world_size:
        raise ValueError(f"the batch size {cfg.batch_size} must divide evenly over {world_size} processes")
    if num_windows < world_size:
        raise ValueError(f"the training dataset has {num_windows} windows, fewer than {world_size} processes")
    return cfg.batch_size // world_size


class WindowBatches(Dataset):
    """A dataset read a batch at a time: item ``indices`` is those windows, stacked by the dataset's own ``batch``
    where it has one (:meth:`tasks.data.WindowDataset.batch`: one conversion per batch), else window by window."""

    def __init__(self, windows: Dataset) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        read = getattr(self.windows, "batch", None)
        return read(indices) if read is not None else default_collate([self.windows[index] for index in indices])


def infinite_batches(
    dataset: Dataset, cfg: TrainConfig, device: torch.device, seed: int, context: DistributedContext | None = None
) -> Iterator[dict[str, Tensor]]:
    """Shuffled batches forever, reshuffled every epoch from the run's seed; with a context, this rank's share."""
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty; collect more episodes or use shorter windows")
    if context is None:  # the sampler DataLoader(shuffle=True, generator=...) makes: the same order
        batch_size, generator = cfg.batch_size, torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, generator=generator)
        drop_last = len(dataset) >= batch_size
    else:  # disjoint shares of one global permutation, the same on every rank
        batch_size, generator = local_batch_size(cfg, len(dataset), context.world_size), None
        sampler = DistributedSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
        )
        drop_last = len(sampler) >= batch_size
    loader = DataLoader(
        WindowBatches(dataset),
        sampler=BatchSampler(sampler, batch_size, drop_last),
        batch_size=None,  # each item is a whole batch
        num_workers=cfg.num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    epoch = 0
    while True:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in loader:
            yield {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        epoch += 1


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


class _LossForward(nn.Module):
    """Makes ``model.loss`` the forward pass, so DDP's gradient hooks see every step."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.loss(batch)


def enable_sigreg_all_reduce(model: nn.Module) -> int:
    """Switch every SIGReg module inside ``model`` to the global-batch statistic; returns how many."""
    regularisers = [module for module in model.modules() if isinstance(module, SIGReg)]
    for regulariser in regularisers:
        regulariser.all_reduce = True
    return len(regularisers)


def group_means(terms: dict[str, Tensor], context: DistributedContext | None) -> dict[str, float]:
    """Each loss term as a float; with a context, its mean over the group (one divergence verdict, one log)."""
    if context is None:
        return {name: float(term.detach()) for name, term in terms.items()}
    names = sorted(terms)
    means = torch.stack([terms[name].detach().float() for name in names])
    dist.all_reduce(means)
    return dict(zip(names, (means / context.world_size).tolist(), strict=True))


class TrainStep:
    """One optimisation step as :func:`train` takes it: the loss under the run's autocast, backward, clipping,
    AdamW, and the learning-rate schedule.

    Built once per run on a model already on its device. bf16 autocast applies where the device
    has bf16 units (``precision`` says what runs); ``cfg.compile`` compiles the loss; AdamW is
    fused on CPU and CUDA (one kernel over all parameters), foreach elsewhere. With a context,
    the loss runs through DDP, which averages the gradients across the group in ``backward``.
    The speed benchmark times this same object.
    """

    def __init__(
        self, model: WorldModel, cfg: TrainConfig, device: torch.device, context: DistributedContext | None = None
    ) -> None:
        if context is None:
            loss_fn = model.loss
        else:
            loss_fn = DistributedDataParallel(
                _LossForward(model), device_ids=[device.index] if device.type == "cuda" else None
            )
        self.loss_fn = torch.compile(loss_fn) if cfg.compile else loss_fn
        self.cfg, self.device, self.context = cfg, device, context
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
        self.optimizer = torch.optim.AdamW(self.parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, cfg.steps, cfg.warmup_frac)
        )
        wants_bf16 = cfg.bf16 and (device.type != "cpu" or cfg.cpu_bf16)
        self.precision = resolve_precision("bf16" if wants_bf16 else "fp32", device)

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return self.scheduler.get_last_lr()[0]

    def __call__(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        """Take 0-based step ``step`` on ``batch``; returns the loss terms (the group's means with a context).

        Raises :class:`TrainingDiverged` before touching the weights when the loss is NaN or infinite.
        """
        if self.cfg.shift_augment:
            batch = {**batch, "pixels": random_shift(batch["pixels"], self.cfg.shift_augment)}
        with autocast_for(self.device, self.precision):
            terms = self.loss_fn(batch)
        means = group_means(terms, self.context)
        if not math.isfinite(means["loss"]):
            raise TrainingDiverged(step, means["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()  # under DDP the gradients are averaged across the ranks here
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return means


def random_shift(pixels: Tensor, pad: int) -> Tensor:
    """DrQ's random shift: pad each window by replicating its border, crop it back at a random offset.

    One offset per window, shared by its frames: a camera placed elsewhere, not one that shakes,
    which is what an evaluation ``camera_shift`` is. ``pixels`` (B, T, C, H, W); same shape out.
    """
    batch, frames, _, height, width = pixels.shape
    padded = nn.functional.pad(rearrange(pixels, "b t c h w -> b (t c) h w"), (pad,) * 4, mode="replicate")
    rows, cols = torch.randint(0, 2 * pad + 1, (2, batch)).tolist()
    crops = [padded[i, :, r : r + height, c : c + width] for i, (r, c) in enumerate(zip(rows, cols, strict=True))]
    return rearrange(torch.stack(crops), "b (t c) h w -> b t c h w", t=frames)


def train(
    model: WorldModel,
    dataset: Dataset,
    cfg: TrainConfig,
    device: torch.device | str,
    seed: int,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    context: DistributedContext | None = None,
) -> TrainStats:
    """Train ``model`` in place on windows from ``dataset`` for ``cfg.steps`` steps; ``log_fn`` gets every record.

    With ``context`` (an initialised process group), this process trains rank ``context.rank``'s
    share of every global batch of ``cfg.batch_size`` windows; the returned stats hold the
    group's mean losses, and the log records, diagnostics and ``log_fn`` calls are rank 0's.
    """
    device = torch.device(device)
    frames = dataset[0]["pixels"].shape[0] if len(dataset) else cfg.num_frames  # (T, 3, H, W)
    if frames != cfg.num_frames:
        raise ValueError(f"train.num_frames is {cfg.num_frames}, but the dataset's windows hold {frames} frames")
    rank, world_size = (context.rank, context.world_size) if context is not None else (0, 1)
    torch.manual_seed(seed)
    if context is not None:
        if enable_sigreg_all_reduce(model) == 0:
            logger.info("%s holds no SIGReg module: nothing to all-reduce beyond the gradients", type(model).__name__)
        if device.type == "cuda":
            # BatchNorm statistics of the global batch too; SyncBatchNorm keeps BatchNorm's state-dict keys.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    model.prepare(dataset)
    model.train()
    if context is not None:
        torch.manual_seed(seed + rank)  # dropout masks differ across ranks, as for independent samples
    take_step = TrainStep(model, cfg, device, context)
    batches = infinite_batches(dataset, cfg, device, seed, context)

    history: list[dict[str, float]] = []
    interval = LogInterval(cfg.steps)
    first_loss = math.nan
    diagnostics: dict[str, float] = {}
    began = time.perf_counter()
    train_seconds = 0.0  # time spent in training steps, diagnostics excluded
    for step in range(cfg.steps):
        step_began = time.perf_counter()
        batch = next(batches)
        means = take_step(batch, step)
        if step == 0:
            first_loss = means["loss"]
        interval.add(means, len(batch["pixels"]) * world_size)
        train_seconds += time.perf_counter() - step_began

        if log_due(step, cfg):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record = interval.flush(step + 1, take_step.lr)
            if rank == 0:  # rank 0's share of the batch; no collectives inside
                diagnostics = latent_batch_diagnostics(model, batch)
                record |= diagnostics
                history.append(record)
                logger.info(
                    "step %d: %s", step + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
                )
                if log_fn is not None:
                    log_fn(record)

    if context is not None:
        # BatchNorm running statistics were updated on each rank's share in the last forward;
        # take rank 0's everywhere so that every replica ends with the same state.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    seconds = time.perf_counter() - began
    return TrainStats(
        steps=cfg.steps,
        seconds=seconds,
        samples_per_s=cfg.steps * cfg.batch_size / max(train_seconds, 1e-9),
        first_loss=first_loss,
        final_loss=interval.final_loss,
        history=history,
        diagnostics=diagnostics,
        precision=take_step.precision,
    )
