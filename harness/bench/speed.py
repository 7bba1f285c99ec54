"""Planning and training speed of the zoo, measured through the code paths trials run.

    python -m harness.bench.speed                                   # LeWM tiny + paper, fp32, compile off
    python -m harness.bench.speed --precision fp32 bf16 --compile off on --episodes-per-call 1 50
    python -m harness.bench.speed --sizes paper --device cuda --cuda-graphs off on   # on a GPU
    python -m harness.bench.speed --models lewm dino_wm --sizes tiny --iterations 3 --repeats 1   # a smoke run
    python -m harness.bench.speed --peer                            # + the authors' library at the same shapes

For each model × size × precision × compile mode (× CUDA graphs off / on, for plans) it times:

* one CEM plan at the published budget (300 samples, 30 elites, 30 iterations, horizon 5; the
  task's history, 1 on Two-Room) through :class:`~harness.eval.controllers.ModelController` —
  the history encoded, the CEM loop over the model's ``rollout_from`` — with K episodes per call
  for each ``--episodes-per-call`` (ms per call and per episode);
* training windows/s at each ``--train-batch`` through :class:`~harness.trial.training.TrainStep`
  (forward, backward, clipping, fused AdamW) on random pixels, after warm-up;
* the peak memory of each measurement (the process's resident set, reset before each; on CUDA
  also ``torch.cuda.max_memory_allocated``) and the achieved FLOP/s against the FLOPs
  ``torch.utils.flop_counter.FlopCounterMode`` counts on one plan call / one training step.

It prints a table and writes one :class:`SpeedRow` per measurement to Parquet (``--out``), with
the device, torch version, precision that ran, compile mode and git sha. Figures from a busy
machine are not figures: quote them from a quiet one, with this command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from harness.eval.cases import CaseView
from harness.eval.controllers import ModelController, Observation
from harness.eval.planners import PlannerConfig
from harness.eval.precision import PRECISIONS, resolve_precision
from harness.report import results
from harness.trial import provenance
from harness.trial.training import TrainConfig, TrainStep
from models.registry import MODELS, build_model, model_sizes, size_preset
from models.world_model import WorldModel
from tasks import ray_cluster
from tasks.base import TASKS, task_class

log = logging.getLogger(__name__)

PUBLISHED_CEM = PlannerConfig(name="cem", samples=300, elites=30, iterations=30, horizon=5, receding=5)  # LeWM
TINY_IMAGE_SIZE = 64  # the CPU presets' frame size (the quickstart's); other sizes use their preset's
COMPILE_MODES = {"off": False, "on": True}
PEER = "stable-worldmodel"


@dataclass
class SpeedRow:
    """One measurement: a plan call or a training step of one model at one size, precision and compile mode."""

    measurement: str  # "plan" | "train"
    implementation: str  # "wmbench", or "stable-worldmodel" (the authors' library, --peer)
    model: str
    size: str
    task: str  # whose history, action block and state width the shapes follow
    image_size: int
    action_dim: int  # one action block: frameskip × the task's action width
    history: int
    num_params: int
    precision: str  # "fp32" | "bf16": what ran (bf16 asked of a device without bf16 units runs fp32)
    compile: bool
    batch: int  # episodes per plan call, or training windows per step
    repeats: int  # timed calls or steps, after warm-up
    call_ms_median: float  # one plan call, or one training step
    warmup_s: float  # the first call or step (compilation included)
    peak_rss_mb: float  # the process's peak resident set during this measurement
    device: str
    threads: int
    torch_version: str
    git_sha: str
    measured_at: datetime
    malloc_tunables: str = ""  # GLIBC_TUNABLES of this process ("": glibc's defaults); trials get worker_env()'s
    samples: int | None = None  # CEM budget (plan rows)
    elites: int | None = None
    iterations: int | None = None
    horizon: int | None = None
    plan_ms_per_episode: float | None = None  # call_ms_median / episodes per call
    frames: int | None = None  # frames per training window (train rows)
    windows_per_s: float | None = None
    flops: float | None = None  # counted on one call / step (FlopCounterMode; attention through the math kernel)
    flops_per_s: float | None = None  # achieved: flops / call_ms_median
    peak_gpu_mb: float | None = None  # torch.cuda.max_memory_allocated during this measurement
    cuda_graphs: bool | None = None  # plan rows: each CEM iteration replayed a captured CUDA graph (only on CUDA)


@dataclass(frozen=True)
class Shapes:
    """What one model size is measured at: the task's history, action block and state width, and a frame size."""

    task: str
    image_size: int
    action_dim: int
    state_dim: int
    history: int
    frames: int  # frames per training window


@dataclass(frozen=True)
class Timing:
    """Wall-clock of repeated calls after warm-up, and the measurement's peak memory."""

    call_ms: list[float]
    warmup_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None

    @property
    def call_ms_median(self) -> float:
        return statistics.median(self.call_ms)


# --- measuring ---


def timed(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Time ``call`` ``repeats`` times after ``warmup`` calls (at least one, which compiles what is compiled)."""
    provenance.reset_peak_memory(device)

    def once() -> float:
        began = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    first = once()
    for _ in range(warmup - 1):
        once()
    call_ms = [once() * 1e3 for _ in range(repeats)]
    gpu = provenance.peak_memory_mb(device) if device.type == "cuda" else None
    return Timing(call_ms, first, provenance.peak_rss_mb(), gpu)


def counted_flops(call: Callable[[], object]) -> float:
    """FLOPs of one ``call`` (FlopCounterMode; attention through the math kernel, whose matmuls it counts)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        call()
    return float(counter.get_total_flops())


# --- planning: ModelController, as trials plan ---


def plan_call(model: WorldModel, planner: PlannerConfig, shapes: Shapes, episodes: int, device: torch.device):
    """One replanning call for ``episodes`` random episodes through a ModelController (goal encoded once, in begin)."""
    controller = ModelController("bench", model, planner, seed=0, device=device)
    rng = np.random.default_rng(0)
    size, history = shapes.image_size, shapes.history
    goals = rng.integers(0, 256, (episodes, size, size, 3), dtype=np.uint8)
    observation = Observation(
        pixels=rng.integers(0, 256, (episodes, history, size, size, 3), dtype=np.uint8),
        past_actions=rng.standard_normal((episodes, history - 1, shapes.action_dim)).astype(np.float32),
        steps_taken=0,
    )
    controller.begin([CaseView(index, index) for index in range(episodes)], goals)
    return controller, lambda: controller.plan(observation)


def plan_flops(model: WorldModel, planner: PlannerConfig, shapes: Shapes, device: torch.device) -> float:
    """Counted FLOPs of one plan call for one episode at ``planner``'s budget.

    Counted on 1 and 2 iterations (the encoding, then one CEM iteration more) and extended to
    ``planner.iterations``; a call for K episodes is K times this (every row is planned alone).
    """
    per_iterations = []
    for iterations in (1, 2):
        fp32 = dataclasses.replace(planner, iterations=iterations, precision="fp32", compile=False)
        _, call = plan_call(model, fp32, shapes, 1, device)
        per_iterations.append(counted_flops(call))
    one, two = per_iterations
    return one + (planner.iterations - 1) * (two - one)


def measure_plan(
    model: WorldModel, planner: PlannerConfig, shapes: Shapes, episodes: int, device: torch.device, args
) -> tuple[Timing, ModelController]:
    """Plan-call timing for ``episodes`` per call, and the controller (what ran: precision, CUDA graphs)."""
    controller, call = plan_call(model, planner, shapes, episodes, device)
    return timed(call, device, args.warmup, args.repeats), controller


# --- training: TrainStep, as trials train ---


def random_batch(batch_size: int, shapes: Shapes, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch of random pixels, action blocks and states: (B, T, 3, H, W), (B, T, A), (B, T, S)."""
    generator = torch.Generator().manual_seed(0)
    frames, size = shapes.frames, shapes.image_size
    batch = {
        "pixels": torch.rand(batch_size, frames, 3, size, size, generator=generator),
        "actions": torch.rand(batch_size, frames, shapes.action_dim, generator=generator) * 2 - 1,
        "states": torch.rand(batch_size, frames, shapes.state_dim, generator=generator),
    }
    return {name: tensor.to(device) for name, tensor in batch.items()}


def train_step(model: WorldModel, cfg: TrainConfig, shapes: Shapes, device: torch.device):
    """A TrainStep on ``model`` and a call that takes the next step on one fixed random batch."""
    model.to(device).train()
    step = TrainStep(model, cfg, device)
    batch = random_batch(cfg.batch_size, shapes, device)
    steps = itertools.count()
    return step, lambda: step(batch, next(steps))


def train_flops(model: WorldModel, shapes: Shapes, batch_size: int, device: torch.device) -> float:
    """Counted FLOPs of one training step (forward and backward) at ``batch_size`` windows, in fp32."""
    cfg = TrainConfig(batch_size=batch_size, num_frames=shapes.frames, bf16=False, compile=False)
    _, call = train_step(model, cfg, shapes, device)
    return counted_flops(call)


def measure_train(
    model: WorldModel, batch_size: int, precision: str, compiled: bool, shapes: Shapes, device: torch.device, args
) -> tuple[Timing, str]:
    """Training-step timing at ``batch_size`` windows, and the precision that ran."""
    cfg = TrainConfig(
        batch_size=batch_size,
        num_frames=shapes.frames,
        bf16=precision == "bf16",
        cpu_bf16=precision == "bf16",
        compile=compiled,
    )
    step, call = train_step(model, cfg, shapes, device)
    return timed(call, device, args.warmup, args.repeats), step.precision


# --- the zoo ---


def shapes_for(name: str, size: str, task: str, image_size: int | None, frames: int | None) -> Shapes:
    """The task's history, action block and state width; the size's frame size unless one is given."""
    if image_size is None:
        image_size = TINY_IMAGE_SIZE if size == "tiny" else size_preset(name, size).image_size
    spec = task_class(task)
    history = spec.default_history
    return Shapes(
        task, image_size, spec.action_dim * spec.default_frameskip, spec.state_dim, history, frames or history + 1
    )


def build(name: str, size: str, shapes: Shapes, device: torch.device) -> WorldModel:
    """The zoo model at ``size``, seeded, on ``device``; an encoder that needs pretraining keeps its random weights."""
    torch.manual_seed(0)
    model = build_model(name, size, shapes.image_size, shapes.action_dim, history=shapes.history)
    if getattr(model, "encoder_source", None) == "untrained":  # DINO-WM without DINOv2 weights: speed needs none
        model.encoder_source = "random (speed benchmark)"
    return model.to(device)


def measure_model(name: str, size: str, args, device: torch.device) -> list[SpeedRow]:
    """Every asked-for measurement of one zoo model at one size."""
    shapes = shapes_for(name, size, args.task, args.image_size, args.train_frames)
    planner = dataclasses.replace(PUBLISHED_CEM, iterations=args.iterations)
    common = {
        "implementation": "wmbench",
        "model": name,
        "size": size,
        "task": shapes.task,
        "image_size": shapes.image_size,
        "action_dim": shapes.action_dim,
        "history": shapes.history,
        "device": provenance.device_name(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "git_sha": provenance.git_sha(),
        "malloc_tunables": provenance.allocator_tunables(),
    }
    plan_fields = {"samples": planner.samples, "elites": planner.elites, "iterations": planner.iterations,
                   "horizon": planner.horizon}  # fmt: skip
    flops_model = build(name, size, shapes, device)
    common["num_params"] = flops_model.num_params
    plan_flops_per_episode = plan_flops(flops_model, planner, shapes, device) if args.episodes_per_call else None
    train_flops_per_window = None
    if args.train_batch:  # linear in the batch: counted at the smallest one
        smallest = min(args.train_batch)
        train_flops_per_window = train_flops(flops_model, shapes, smallest, device) / smallest
    del flops_model
    rows = []
    for precision in args.precision:
        for compile_mode in args.compile:
            compiled = COMPILE_MODES[compile_mode]
            model = build(name, size, shapes, device).eval()
            for graphs, episodes in itertools.product(args.cuda_graphs, args.episodes_per_call):
                planned = dataclasses.replace(planner, precision=precision, compile=compiled,
                                              cuda_graphs=COMPILE_MODES[graphs])  # fmt: skip
                timing, ran = measure_plan(model, planned, shapes, episodes, device, args)
                figures = measured(timing, plan_flops_per_episode * episodes)
                rows.append(
                    SpeedRow(**common, **plan_fields, **figures, measurement="plan", precision=ran.precision,
                             compile=compiled, cuda_graphs=ran.cuda_graphs, batch=episodes,
                             plan_ms_per_episode=timing.call_ms_median / episodes)
                )  # fmt: skip
                log.info("%s", _describe(rows[-1]))
            for batch_size in args.train_batch:
                timing, ran = measure_train(model, batch_size, precision, compiled, shapes, device, args)
                figures = measured(timing, train_flops_per_window * batch_size)
                rows.append(
                    SpeedRow(**common, **figures, measurement="train", precision=ran, compile=compiled,
                             batch=batch_size, frames=shapes.frames,
                             windows_per_s=batch_size * 1e3 / timing.call_ms_median)
                )  # fmt: skip
                log.info("%s", _describe(rows[-1]))
    return rows


def measured(timing: Timing, flops: float | None) -> dict:
    """A row's timing and memory fields, with the achieved FLOP/s where FLOPs were counted."""
    seconds = timing.call_ms_median / 1e3
    return {
        "repeats": len(timing.call_ms),
        "call_ms_median": timing.call_ms_median,
        "warmup_s": timing.warmup_s,
        "peak_rss_mb": timing.peak_rss_mb,
        "peak_gpu_mb": timing.peak_gpu_mb,
        "measured_at": datetime.now(UTC),
        "flops": flops,
        "flops_per_s": None if flops is None else flops / seconds,
    }


# --- the authors' library (--peer) ---


def peer_rows(wmbench_rows: list[SpeedRow], args, device: torch.device) -> list[SpeedRow]:
    """The authors' LeWM timed at the shapes of every wmbench LeWM row, fp32 and uncompiled as it ships.

    Built from their parts (HF ViT encoder, AdaLN-zero Predictor, Embedder, BatchNorm MLP projectors)
    at this size's widths: at the paper size every shape is the same; where ours separates the
    latent and predictor widths (tiny), theirs takes the latent width for its action embedding.
    """
    try:
        from stable_worldmodel.solver.cem import CEMSolver  # noqa: F401 - only whether it imports
    except ImportError as error:
        print(f"--peer: stable_worldmodel is not importable here ({error}); no peer figures.")
        return []
    rows = []
    done: set[tuple[str, str, int]] = set()
    for row in wmbench_rows:
        if row.model != "lewm" or (row.measurement, row.size, row.batch) in done:
            continue
        done.add((row.measurement, row.size, row.batch))
        shapes = shapes_for(row.model, row.size, row.task, row.image_size, row.frames)
        torch.manual_seed(0)
        ours = build_model("lewm", row.size, shapes.image_size, shapes.action_dim, history=shapes.history).config
        peer, sigreg = _peer_lewm(ours, device)
        common = {name: getattr(row, name) for name in ("model", "size", "task", "image_size", "action_dim",
                  "history", "device", "threads", "torch_version", "git_sha", "malloc_tunables")}  # fmt: skip
        common |= {"implementation": PEER, "num_params": sum(p.numel() for p in peer.parameters())}
        common |= {"measurement": row.measurement, "precision": "fp32", "compile": False, "batch": row.batch}
        if row.measurement == "plan":
            timing = _peer_plan(peer, shapes, row, device, args)
            rows.append(
                SpeedRow(**common, **measured(timing, None), samples=row.samples, elites=row.elites,
                         iterations=row.iterations, horizon=row.horizon,
                         plan_ms_per_episode=timing.call_ms_median / row.batch)
            )  # fmt: skip
        else:
            timing = _peer_train(peer, sigreg, ours.sigreg_weight, shapes, row.batch, device, args)
            rows.append(
                SpeedRow(**common, **measured(timing, None), frames=row.frames,
                         windows_per_s=row.batch * 1e3 / timing.call_ms_median)
            )  # fmt: skip
        log.info("%s", _describe(rows[-1]))
    return rows


def _peer_lewm(cfg, device: torch.device):
    """Their LeWM from their parts at the widths of our config ``cfg`` (a LeWMConfig)."""
    from stable_worldmodel.wm.lewm.lewm import LeWM as PeerLeWM
    from stable_worldmodel.wm.lewm.module import MLP, Embedder, Predictor
    from stable_worldmodel.wm.loss import SIGReg as PeerSIGReg
    from transformers import ViTConfig, ViTModel

    encoder = ViTModel(
        ViTConfig(image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.encoder_width,
                  num_hidden_layers=cfg.encoder_depth, num_attention_heads=cfg.encoder_heads,
                  intermediate_size=cfg.encoder_mlp_dim),
        add_pooling_layer=False,
    )  # fmt: skip
    predictor = Predictor(
        num_frames=cfg.history, depth=cfg.predictor_depth, heads=cfg.predictor_heads, mlp_dim=cfg.predictor_mlp_dim,
        input_dim=cfg.latent_dim, hidden_dim=cfg.predictor_width, dim_head=cfg.predictor_dim_head,
        dropout=cfg.predictor_dropout,
    )  # fmt: skip
    actions = Embedder(input_dim=cfg.action_dim, smoothed_dim=cfg.action_conv_dim, emb_dim=cfg.latent_dim,
                       mlp_scale=cfg.action_mlp_ratio)  # fmt: skip
    projector = MLP(cfg.encoder_width, cfg.projector_hidden, cfg.latent_dim, norm_fn=torch.nn.BatchNorm1d)
    predictor_projector = MLP(cfg.latent_dim, cfg.projector_hidden, cfg.latent_dim, norm_fn=torch.nn.BatchNorm1d)
    model = PeerLeWM(encoder, predictor, actions, projector, predictor_projector).to(device)
    return model, PeerSIGReg()


def _peer_plan(peer, shapes: Shapes, row: SpeedRow, device: torch.device, args) -> Timing:
    """Their CEMSolver.solve at the row's budget for ``row.batch`` environments."""
    from gymnasium.spaces import Box
    from stable_worldmodel.solver.cem import CEMSolver

    peer.eval()
    solver = CEMSolver(peer, num_samples=row.samples, n_steps=row.iterations, topk=row.elites, device=str(device))
    frameskip = task_class(shapes.task).default_frameskip
    space = Box(-1, 1, shape=(row.batch, shapes.action_dim // frameskip), dtype=np.float32)
    plan_config = argparse.Namespace(horizon=row.horizon, action_block=frameskip, receding_horizon=row.horizon)
    solver.configure(action_space=space, n_envs=row.batch, config=plan_config)
    size, history = shapes.image_size, shapes.history
    pixels, goal = torch.rand(2, row.batch, history, 3, size, size)
    past = torch.zeros(row.batch, history, shapes.action_dim)

    def solve() -> None:
        solver.solve({"pixels": pixels, "goal": goal, "action": past})  # a fresh dict: their solver writes into it

    with torch.inference_mode():
        return timed(solve, device, args.warmup, args.repeats)


def _peer_train(peer, sigreg, weight: float, shapes: Shapes, batch_size: int, device: torch.device, args) -> Timing:
    """Their training step (encode, predict, MSE + λ·SIGReg, AdamW) on random pixels, as their script takes it."""
    optimizer = torch.optim.AdamW(peer.parameters(), lr=5e-5, weight_decay=1e-3)
    batch = random_batch(batch_size, shapes, device)
    context = shapes.frames - 1
    peer.train()

    def step() -> None:
        info = peer.encode({"pixels": batch["pixels"], "action": batch["actions"]})
        embeddings, action_embeddings = info["emb"], info["act_emb"]  # (B, T, D) each
        predicted = peer.predict(embeddings[:, :context], action_embeddings[:, :context])
        loss = (predicted - embeddings[:, 1:]).pow(2).mean() + weight * sigreg(embeddings.transpose(0, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return timed(step, device, args.warmup, args.repeats)


# --- the table ---


def _describe(row: SpeedRow) -> str:
    what = f"{row.batch} ep/call" if row.measurement == "plan" else f"batch {row.batch}"
    how = f"{row.precision} compile={row.compile}" + (" cuda_graphs=True" if row.cuda_graphs else "")
    return f"{row.implementation} {row.model}-{row.size} {row.measurement} {what} {how}"


def table(rows: list[SpeedRow]) -> str:
    """The measurements as a fixed-width table; beside each wmbench row, its time over the peer's at the same shape."""
    peer = {(r.measurement, r.model, r.size, r.batch): r.call_ms_median for r in rows if r.implementation == PEER}
    header = ("impl", "model", "size", "what", "batch", "prec", "compile", "graphs", "ms/call", "ms/episode",
              "windows/s", "GFLOP", "GFLOP/s", "peak RSS MB", "peak GPU MB", "time ÷ peer")  # fmt: skip
    lines = [header]
    for r in rows:
        ratio = peer.get((r.measurement, r.model, r.size, r.batch)) if r.implementation != PEER else None
        lines.append((
            r.implementation, r.model, r.size, r.measurement, str(r.batch), r.precision, "on" if r.compile else "off",
            {None: "", False: "off", True: "on"}[r.cuda_graphs],
            f"{r.call_ms_median:,.1f}", _maybe(r.plan_ms_per_episode, "{:,.1f}"), _maybe(r.windows_per_s, "{:,.1f}"),
            _maybe(r.flops and r.flops / 1e9, "{:,.1f}"), _maybe(r.flops_per_s and r.flops_per_s / 1e9, "{:,.1f}"),
            f"{r.peak_rss_mb:,.0f}", _maybe(r.peak_gpu_mb, "{:,.0f}"),
            _maybe(ratio and r.call_ms_median / ratio, "{:.2f}"),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)


def _maybe(value: float | None, form: str) -> str:
    return "" if value is None else form.format(value)


def write_rows(rows: list[SpeedRow], out: Path) -> str:
    """The rows as one Parquet file at ``out`` (written atomically), schema from :class:`SpeedRow`'s fields."""
    return results.write_atomic(results.to_table(rows, SpeedRow), str(out.parent), out.name)


# --- the command ---


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.bench.speed", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lewm"], choices=sorted(MODELS))
    p.add_argument("--sizes", nargs="+", default=["tiny", "paper"])
    p.add_argument("--task", default="two_room", choices=sorted(TASKS), help="whose history and action block")
    p.add_argument(
        "--image-size", type=int, help=f"frame size (default: {TINY_IMAGE_SIZE} for tiny, else the preset's)"
    )
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS)
    p.add_argument("--compile", nargs="+", default=["off"], choices=list(COMPILE_MODES))
    p.add_argument("--cuda-graphs", nargs="+", default=["off"], choices=list(COMPILE_MODES),
                   help="plan through captured CUDA graphs (planner.cuda_graphs; CUDA only)")  # fmt: skip
    p.add_argument("--episodes-per-call", nargs="*", type=int, default=[1, 50], metavar="K")
    p.add_argument("--iterations", type=int, default=PUBLISHED_CEM.iterations, help="CEM iterations (published: 30)")
    p.add_argument("--train-batch", nargs="*", type=int, default=[16, 128], metavar="B")
    p.add_argument("--train-frames", type=int, help="frames per training window (default: history + 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (at least 1: compilation)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls or steps; the median is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("results/bench/speed.parquet"))
    p.add_argument("--peer", action="store_true", help="also time the authors' library (stable_worldmodel) LeWM")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.warmup < 1 or args.repeats < 1 or args.iterations < 1:
        print("error: --warmup, --repeats and --iterations must be at least 1", file=sys.stderr)
        return 2
    for name in args.models:
        unknown = [size for size in args.sizes if size not in model_sizes(name)]
        if unknown:
            print(f"error: {name} has no size {unknown[0]!r}; sizes: {', '.join(model_sizes(name))}", file=sys.stderr)
            return 2
    device = torch.device(args.device)
    for precision in args.precision:
        resolve_precision(precision, device)  # warns once when bf16 will run as fp32
    print(f"{provenance.device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.python_version()}, git {provenance.git_sha()}")  # fmt: skip
    if "GLIBC_TUNABLES" not in os.environ:  # the driver would give trials this, and glibc reads it at start
        print(f"note: trials run with GLIBC_TUNABLES={ray_cluster.worker_env()['GLIBC_TUNABLES']} (glibc keeping "
              "freed memory); set it in this command's environment to time what they run")  # fmt: skip
    rows = [row for name in args.models for size in args.sizes for row in measure_model(name, size, args, device)]
    if args.peer:
        rows += peer_rows(rows, args, device)
    print(table(rows))
    print(f"wrote {len(rows)} rows to {write_rows(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
