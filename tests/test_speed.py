"""Planning and training speed-ups keep the results, and the speed benchmark writes its rows.

Behaviour, never time (DESIGN.md "Rules"): LeWM's cached rollout and the planner's encode-once
cost give exactly the plain path's plans for the same seed; bf16 plans score like fp32 ones;
bf16 is used only where the device has bf16 units, and rows say what ran; the benchmark runs at
a tiny size in seconds and writes the documented columns. Each test was checked by breaking
the thing it holds on a scratch copy and seeing it fail.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from einops import rearrange, repeat
from torch import nn

import harness.eval.planners as planners
import harness.eval.precision as precision
from harness.bench import speed
from harness.eval.cases import CaseView
from harness.eval.controllers import ModelController, Observation, _generator
from harness.eval.planners import LatentCost, PlannerConfig, make_planner
from harness.report import results
from harness.sweep.config import expand_trials, load_sweep
from harness.trial import provenance
from harness.trial.training import TrainConfig, TrainStep
from harness.trial.trial import run_trial
from models.blocks.vit import ConditionedBlock
from models.lewm.model import LeWM
from models.registry import build_model
from models.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 32
ACTION_DIM = 10  # frameskip 5 × 2-D actions
TINY_SWEEP = Path(__file__).parent / "data" / "tiny_sweep.yaml"
PLANNER = PlannerConfig(samples=48, iterations=4, elites=6, horizon=3, receding=3)


def action_sensitive(name: str, size: str, history: int) -> WorldModel:
    """A tiny zoo model whose plans matter: AdaLN-zero starts every gate at 0 (actions ignored), so open them."""
    torch.manual_seed(0)
    model = build_model(name, size, IMAGE_SIZE, ACTION_DIM, history=history)
    for module in model.modules():
        if isinstance(module, ConditionedBlock):
            nn.init.normal_(module.modulation[-1].weight, std=0.2)
    return model.eval()


def action_sensitive_lewm(history: int) -> LeWM:
    return action_sensitive("lewm", "tiny", history)


def episodes(history: int, count: int = 2, seed: int = 0) -> tuple[np.ndarray, Observation]:
    """Goal images (K, H, W, 3) and one observation of ``history`` frames and the blocks between them."""
    rng = np.random.default_rng(seed)
    goals = rng.integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    pixels = rng.integers(0, 256, (count, history, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    past = rng.standard_normal((count, history - 1, ACTION_DIM)).astype(np.float32)
    return goals, Observation(pixels, past, steps_taken=0)


CASES = [CaseView(0, 11), CaseView(1, 12)]


def controller_plan(model: WorldModel, planner: PlannerConfig, history: int) -> torch.Tensor:
    controller = ModelController("lewm", model, planner, seed=0)
    goals, observation = episodes(history)
    controller.begin(CASES, goals)
    return controller.plan(observation)


def pixels_of(frames: np.ndarray) -> torch.Tensor:
    return rearrange(torch.from_numpy(frames), "... h w c -> ... c h w").float() / 255


def plain_plan(model: WorldModel, planner: PlannerConfig, history: int) -> torch.Tensor:
    """The same CEM with nothing cached: every iteration encodes the history and the goal again, repeats them per
    sample and rolls out through ``WorldModel.rollout`` (predict over every token, actions embedded at every step)."""
    goals, observation = episodes(history)
    past = torch.from_numpy(observation.past_actions)

    @torch.inference_mode()
    def cost(candidates: torch.Tensor) -> torch.Tensor:  # (K, S, H, A) -> (K, S)
        samples = candidates.shape[1]
        z_hist = model.encode(pixels_of(observation.pixels))  # (K, h, 1, D)
        z_goal = model.encode(pixels_of(goals[:, None]))[:, -1]  # (K, 1, D)
        per_sample = functools.partial(repeat, pattern="k ... -> (k s) ...", s=samples)
        plans = rearrange(candidates, "k s h a -> (k s) h a")
        final = WorldModel.rollout(model, per_sample(z_hist), plans, per_sample(past))[:, -1]
        return rearrange((final - per_sample(z_goal)).pow(2).sum(dim=(-2, -1)), "(k s) -> k s", s=samples)

    mean = torch.zeros(len(CASES), planner.horizon, ACTION_DIM)
    return make_planner(planner).optimize(cost, mean, _generator(0, CASES))


# --- the fast path is the plain path ---


@pytest.mark.parametrize("history", [1, 3])
def test_lewm_cached_rollout_equals_the_plain_rollout_over_predict(history):
    """Past actions embedded once, the plan's blocks in one call, only the last token projected: the same latents."""
    model = action_sensitive_lewm(history)
    generator = torch.Generator().manual_seed(1)
    z_hist = torch.randn(6, history, 1, model.config.latent_dim, generator=generator)
    plan = torch.randn(6, 4, ACTION_DIM, generator=generator)
    past = torch.randn(6, history - 1, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        cached = model.rollout_from(model.start_rollout(z_hist, past), plan)
        plain = WorldModel.rollout(model, z_hist, plan, past)
    # Equal up to the last bit of fp32: the same products, in matrices of other shapes (BLAS may block them otherwise).
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)


# The zoo models whose start_rollout/rollout_from cache within a plan. PLDM's conv variant and Dreamer imagine from the
# last latent alone (Dreamer: h_0 and its probabilities' mode), so the default start holds all they would cache.
CACHING_MODELS = [("lewm", "tiny"), ("dino_wm", "tiny"), ("pldm", "vit_tiny")]


@pytest.mark.parametrize("history", [1, 3])
@pytest.mark.parametrize(("name", "size"), CACHING_MODELS)
def test_every_cached_rollout_equals_the_plain_rollout_over_predict_also_for_selected_rows(name, size, history):
    """Cached per plan, rolled out per iteration: the latents of WorldModel.rollout, whole batch or rows of it."""
    model = action_sensitive(name, size, history)
    generator = torch.Generator().manual_seed(1)
    latent_dim = 64  # every tiny size here
    z_hist = torch.randn(6, history, model.tokens_per_frame, latent_dim, generator=generator)  # 6 different rows
    plan = torch.randn(6, 4, ACTION_DIM, generator=generator)
    past = torch.randn(6, history - 1, ACTION_DIM, generator=generator)
    index = torch.tensor([4, 0, 0, 2, 5, 4])  # each candidate's episode, as the planner selects them
    # Equal to fp32 rounding: the same products, in matrices of other shapes (and, for DINO-WM, attention over fewer
    # queries), which BLAS may block otherwise.
    close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        start = model.start_rollout(z_hist, past)
        close(model.rollout_from(start, plan), WorldModel.rollout(model, z_hist, plan, past))
        selected = model.rollout_from(start.rows(index), plan)
        close(selected, WorldModel.rollout(model, z_hist[index], plan, past[index]))
        chunk = model.rollout_from(start.rows(slice(1, 4)), plan[1:4])
        close(chunk, WorldModel.rollout(model, z_hist[1:4], plan[1:4], past[1:4]))


def test_dino_wm_makes_each_frame_tokens_once_and_projects_out_only_the_last_frame():
    """Past frames' tokens once per plan; per step, the new frame's tokens in and the last frame's patches out."""
    model = action_sensitive("dino_wm", "tiny", history=3)
    patches = model.tokens_per_frame
    calls: dict[str, list[int]] = {"project_in": [], "project_out": []}
    for part, sizes in calls.items():  # rows of the last dim into each projection
        getattr(model.predictor, part).register_forward_hook(
            lambda _, inputs, __, sizes=sizes: sizes.append(inputs[0].numel() // inputs[0].shape[-1])
        )
    generator = torch.Generator().manual_seed(2)
    z_hist, goal = torch.randn(2, 3, patches, 64, generator=generator), torch.randn(2, patches, 64, generator=generator)
    past = torch.randn(2, 2, ACTION_DIM, generator=generator)
    candidates = torch.randn(2, 8, PLANNER.horizon, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        cost = LatentCost(model, z_hist, past, goal)  # once per plan
        for _ in range(PLANNER.iterations):
            cost(candidates)
    steps, rows = PLANNER.iterations * PLANNER.horizon, 2 * 8
    assert calls["project_in"] == [2 * 2 * patches] + [rows * patches] * steps  # frames 0, 1; then one frame a step
    assert calls["project_out"] == [rows * patches] * steps


@pytest.mark.parametrize("history", [1, 3])
def test_encode_once_planning_gives_exactly_the_plan_of_re_encoding_every_iteration(history):
    """Same seed, same plan, bit for bit: the goal encoded per episode, the history and its start per plan."""
    model = action_sensitive_lewm(history)
    fast = controller_plan(model, PLANNER, history)
    assert torch.equal(fast, plain_plan(model, PLANNER, history))
    chunked = controller_plan(model, dataclasses.replace(PLANNER, chunk=17), history)  # chunks cut across episodes
    assert torch.equal(chunked, fast)


@pytest.mark.parametrize(("name", "size"), [("lewm", "tiny"), ("pldm", "vit_tiny")])
def test_a_plan_encodes_each_image_once_and_embeds_the_past_once_whatever_the_iterations(name, size):
    """Goal per episode, history and past actions per plan; per iteration the plan's blocks, and one token per step."""
    model = action_sensitive(name, size, 3)
    calls: dict[str, list[int]] = {"encoder": [], "action_encoder": [], "predictor_projector": []}
    for part, sizes in calls.items():  # images into the encoder, vectors (rows of the last dim) into the others
        size_of = len if part == "encoder" else lambda tensor: tensor.numel() // tensor.shape[-1]
        getattr(model, part).register_forward_hook(
            lambda _, inputs, __, sizes=sizes, size_of=size_of: sizes.append(size_of(inputs[0]))
        )
    controller_plan(model, PLANNER, history=3)
    candidates = len(CASES) * PLANNER.samples
    assert calls["encoder"] == [len(CASES), len(CASES) * 3]  # the goal (begin), then the history (plan)
    assert calls["action_encoder"] == [len(CASES) * 2] + [candidates * PLANNER.horizon] * PLANNER.iterations
    assert calls["predictor_projector"] == [candidates] * (PLANNER.iterations * PLANNER.horizon)  # the last token only


# --- bf16 ---


# LeWM's own rollout, and PLDM's ViT variant through WorldModel.rollout (whose latents come out in bf16 under autocast).
@pytest.mark.parametrize(("name", "size"), [("lewm", "tiny"), ("pldm", "vit_tiny")])
def test_bf16_costs_follow_fp32_closely_and_are_reduced_in_fp32(name, size):
    model = action_sensitive(name, size, history=3)
    generator = torch.Generator().manual_seed(2)
    z_hist, goal = torch.randn(2, 3, 1, 64, generator=generator), torch.randn(2, 1, 64, generator=generator)
    past = torch.randn(2, 2, ACTION_DIM, generator=generator)
    candidates = torch.randn(2, 64, 5, ACTION_DIM, generator=generator)
    with torch.inference_mode():
        exact = LatentCost(model, z_hist, past, goal)(candidates)
        rounded = LatentCost(model, z_hist, past, goal, precision="bf16")(candidates)
    assert rounded.dtype == torch.float32
    assert not torch.equal(rounded, exact)  # the rollout did run in bf16
    torch.testing.assert_close(rounded, exact, rtol=1e-2, atol=0)
    assert torch.equal(rounded.argmin(dim=1), exact.argmin(dim=1))  # the same best candidate in every episode


def test_a_bf16_plan_gets_as_near_the_goal_as_the_fp32_plan(monkeypatch):
    """Scored in fp32: CEM in bf16 keeps 90% of fp32's gain over the zero plan, and beats 500 random plans."""
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: True)  # autocast on CPU also runs without the units
    model = action_sensitive_lewm(3)
    planner = dataclasses.replace(PLANNER, iterations=16)
    plans = {name: controller_plan(model, dataclasses.replace(planner, precision=name), 3) for name in ("fp32", "bf16")}
    goals, observation = episodes(3)
    with torch.inference_mode():
        z_hist, z_goal = model.encode(pixels_of(observation.pixels)), model.encode(pixels_of(goals[:, None]))[:, -1]
        cost = LatentCost(model, z_hist, torch.from_numpy(observation.past_actions), z_goal)
        exact, rounded = (cost(plans[name][:, None])[:, 0] for name in ("fp32", "bf16"))  # (K,) each
        zero_plan = cost(torch.zeros(len(CASES), 1, planner.horizon, ACTION_DIM))[:, 0]
        random_plans = cost(
            torch.randn(len(CASES), 500, planner.horizon, ACTION_DIM, generator=torch.Generator().manual_seed(3))
        )
    assert (rounded - exact).abs().max() <= 0.1 * (zero_plan - exact).min()
    assert (rounded < random_plans.min(dim=1).values).all()


def test_bf16_runs_only_where_the_device_has_bf16_units_and_says_what_ran(monkeypatch):
    bf16 = dataclasses.replace(PLANNER, precision="bf16")
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)
    assert ModelController("lewm", action_sensitive_lewm(1), bf16, seed=0).precision == "fp32"
    cpu_bf16 = TrainConfig(bf16=True, cpu_bf16=True)
    assert TrainStep(action_sensitive_lewm(1), cpu_bf16, torch.device("cpu")).precision == "fp32"
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: True)
    assert ModelController("lewm", action_sensitive_lewm(1), bf16, seed=0).precision == "bf16"
    step = TrainStep(action_sensitive_lewm(1), cpu_bf16, torch.device("cpu"))
    assert step.precision == "bf16" and step.optimizer.defaults["fused"]
    # Without cpu_bf16 a CPU trains in fp32, as the README's CPU figures were measured.
    assert TrainStep(action_sensitive_lewm(1), TrainConfig(bf16=True), torch.device("cpu")).precision == "fp32"
    assert precision.autocast_for("cpu", "bf16").fast_dtype == torch.bfloat16
    with precision.autocast_for("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="planner.precision"):
        PlannerConfig(precision="fp16")


# --- compile ---


def test_the_rollout_is_compiled_once_per_trial_and_plans_as_the_eager_one(monkeypatch):
    compiled, real_compile = [], torch.compile

    def compile_eagerly(fn, **options):  # dynamo's trace without inductor's minutes of code generation
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    model = action_sensitive_lewm(3)
    controller = ModelController("lewm", model, dataclasses.replace(PLANNER, compile=True), seed=0)
    goals, observation = episodes(3)
    controller.begin(CASES, goals)
    first, second = controller.plan(observation), controller.plan(observation)
    assert compiled == [model.rollout_from]  # once, at construction: not per plan
    eager = ModelController("lewm", model, PLANNER, seed=0)
    eager.begin(CASES, goals)
    torch.testing.assert_close(first, eager.plan(observation))
    torch.testing.assert_close(second, eager.plan(observation))


# --- CUDA graphs ---


def test_cuda_graphs_asked_for_off_cuda_plan_exactly_as_without_and_warn_once(caplog):
    planners._warn_no_cuda_graphs.cache_clear()  # once per process: forget any earlier test's warning
    model = action_sensitive_lewm(3)
    graphs = dataclasses.replace(PLANNER, cuda_graphs=True)
    controller = ModelController("lewm", model, graphs, seed=0)
    goals, observation = episodes(3)
    controller.begin(CASES, goals)
    first, second = controller.plan(observation), controller.plan(observation)
    ModelController("lewm", model, graphs, seed=0)  # a second controller (a second trial) warns no more
    assert controller.cuda_graphs is False and controller.optimizer.config.cuda_graphs is False
    plain = ModelController("lewm", model, PLANNER, seed=0)
    plain.begin(CASES, goals)
    assert torch.equal(first, plain.plan(observation)) and torch.equal(second, plain.plan(observation))
    warnings = [record for record in caplog.records if "cuda_graphs" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_a_graphed_plan_loads_every_plans_inputs_and_plans_exactly_as_the_ordinary_loop(monkeypatch):
    """The CUDA path's bookkeeping on the CPU: "capture" runs the step eagerly, as a replay runs the captured kernels.

    One capture per shape; each later plan of that shape must copy its own goal, history and warm start
    into the static tensors and draw its noise from its own generator, or it plans the first plan's problem.
    """
    captured = []

    def eager_capture(step):  # warm-up runs mutate the static tensors, as on CUDA; the replay is the step itself
        captured.append(step)
        step()
        step()
        return step

    monkeypatch.setattr(planners, "capture_cuda_graph", eager_capture)
    model = action_sensitive_lewm(3)
    graphed, ordinary = make_planner(dataclasses.replace(PLANNER, cuda_graphs=True)), make_planner(PLANNER)
    for seed, count in [(0, 2), (1, 2), (2, 2), (3, 3)]:  # three plans of one shape, then a new shape
        goals, observation = episodes(3, count=count, seed=seed)
        with torch.inference_mode():
            z_hist, z_goal = model.encode(pixels_of(observation.pixels)), model.encode(pixels_of(goals[:, None]))[:, -1]
            cost = LatentCost(model, z_hist, torch.from_numpy(observation.past_actions), z_goal)
            mean = torch.randn(count, PLANNER.horizon, ACTION_DIM, generator=torch.Generator().manual_seed(seed))
            plans = [
                planner.optimize(cost, mean, torch.Generator().manual_seed(seed)) for planner in (graphed, ordinary)
            ]
        assert torch.equal(*plans), f"plan {seed} differs"
    assert len(captured) == len(graphed.graphs) == 2  # one capture per shape, reused by the plans of that shape


def test_planner_cuda_graphs_takes_only_true_or_false():
    with pytest.raises(ValueError, match="planner.cuda_graphs must be true or false, got 'yes'"):
        PlannerConfig(cuda_graphs="yes")


# --- the benchmark ---


def test_plan_flops_are_extended_exactly_from_one_and_two_iterations():
    shapes = speed.Shapes("two_room", IMAGE_SIZE, ACTION_DIM, 2, history=1, frames=2)
    model = action_sensitive_lewm(1)
    planner = dataclasses.replace(speed.PUBLISHED_CEM, samples=16, elites=4, iterations=3)
    _, whole_plan = speed.plan_call(model, planner, shapes, 1, torch.device("cpu"))
    assert speed.plan_flops(model, planner, shapes, torch.device("cpu")) == speed.counted_flops(whole_plan) > 0


def test_the_speed_benchmark_writes_one_typed_row_per_measurement(tmp_path, capsys):
    out = tmp_path / "speed.parquet"
    argv = ["--sizes", "tiny", "--image-size", str(IMAGE_SIZE), "--iterations", "1", "--repeats", "1",
            "--episodes-per-call", "1", "3", "--train-batch", "2", "--out", str(out)]  # fmt: skip
    assert speed.main(argv) == 0
    table = pq.read_table(out)
    assert table.schema.names == results.schema_of(speed.SpeedRow).names
    rows = table.to_pylist()
    assert [(r["measurement"], r["batch"]) for r in rows] == [("plan", 1), ("plan", 3), ("train", 2)]
    for row in rows:
        assert row["implementation"] == "wmbench" and row["model"] == "lewm" and row["size"] == "tiny"
        assert row["precision"] == "fp32" and row["compile"] is False and row["history"] == 1  # Two-Room
        assert row["torch_version"] == torch.__version__ and row["git_sha"] and row["device"].startswith("cpu")
        assert row["call_ms_median"] > 0 and row["peak_rss_mb"] > 0 and row["flops"] > 0
        assert row["flops_per_s"] == pytest.approx(row["flops"] / (row["call_ms_median"] / 1e3))
        assert row["malloc_tunables"] == os.environ.get("GLIBC_TUNABLES", "")  # what this process started with
    plan_one, plan_three, step = rows
    assert plan_three["flops"] == 3 * plan_one["flops"]  # every episode is planned alone
    assert plan_three["plan_ms_per_episode"] == pytest.approx(plan_three["call_ms_median"] / 3)
    assert plan_one["samples"] == 300 and plan_one["elites"] == 30 and plan_one["horizon"] == 5  # published CEM
    assert step["windows_per_s"] == pytest.approx(2 / (step["call_ms_median"] / 1e3)) and step["frames"] == 2
    printed = capsys.readouterr().out
    assert "ms/episode" in printed and "windows/s" in printed and str(out) in printed
    # Run without the allocator setting trials get, it says so and how to time what they run.
    assert ("GLIBC_TUNABLES=" in printed) == ("GLIBC_TUNABLES" not in os.environ)


# --- rows ---


def test_a_trials_peak_memory_starts_at_its_own_start_not_the_processs():
    """Tune reuses a trial's process for the next: the peak a row records restarts at reset_peak_memory."""
    cpu = torch.device("cpu")
    big = np.ones(400 * 2**20 // 8)  # 400 MB, touched: the process's peak so far
    with_big = provenance.peak_memory_mb(cpu)
    del big  # an mmapped block: handed back to the kernel
    provenance.reset_peak_memory(cpu)
    assert provenance.peak_memory_mb(cpu) < with_big - 300


def test_result_files_from_before_the_precision_columns_still_read(tmp_path):
    new = ("plan_precision", "plan_compile", "plan_cuda_graphs", "train_precision", "train_compile", "malloc_tunables")
    row = results.ConditionRow(
        sweep="s", trial_id="t", status="ok", task="two_room", model="lewm", role="model", variant="", seed=0,
        config="{}", protocol="{}", protocol_hash="p", condition="clean", episodes=0,
    )  # fmt: skip
    table = results.to_table([row], results.ConditionRow)
    old = table.drop_columns(list(new))
    (tmp_path / results.TRIALS_DIR).mkdir()
    pq.write_table(old, tmp_path / results.TRIALS_DIR / "t.parquet")
    loaded = results.load(str(tmp_path))
    assert all(loaded[name].isna().all() for name in new)
    assert results.CONDITION_SCHEMA.field("plan_compile").type == pa.bool_()


def test_a_trials_rows_say_which_precision_and_compile_mode_it_planned_and_trained_in(tmp_path, cache_dir, monkeypatch):
    """bf16 asked for planning and training on a CPU without bf16 units, and CUDA graphs: the row says what ran."""
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)
    # train.steps=12: a checkpoint of its own, never one another test trained with the real CPU's bf16 units
    overrides = ["models=[{name:lewm,size:tiny}]", "conditions=[{}]", "diagnostics=false", "planner.precision=bf16",
                 "planner.cuda_graphs=true", "train.bf16=true", "train.steps=12",
                 f"results_dir={tmp_path}"]  # fmt: skip
    (spec,) = expand_trials(load_sweep(TINY_SWEEP, overrides))
    (row,) = run_trial(spec)[0]
    names = ("plan_precision", "plan_compile", "plan_cuda_graphs", "train_precision", "train_compile")
    ran = {name: getattr(row, name) for name in names}
    assert ran == {"plan_precision": "fp32", "plan_compile": False, "plan_cuda_graphs": False,
                   "train_precision": "fp32", "train_compile": False}  # fmt: skip
