"""The method as published, step by step: each test fails when one step of it is done wrong.

Each test names the published fact it holds (REFERENCE.md) and was checked by making the
wrong change on a scratch copy and seeing it fail: CEM's first sample, the terminal cost,
LeWM's predictor dropout and per-step SIGReg, PLDM's time variance, DINO-WM's action input,
and cases matched across models, seeds and conditions. Tiny sizes, CPU, seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from einops import rearrange
from torch import nn

import models.blocks.sigreg as sigreg_module
from harness.eval.planners import LatentCost, PlannerConfig, make_planner
from harness.sweep.config import expand_trials, load_sweep
from harness.trial.trial import run_trial
from models.blocks.sigreg import sigreg
from models.lewm.model import LeWMConfig
from models.registry import build_model
from models.world_model import WorldModel

TINY_SWEEP = Path(__file__).parent / "data" / "tiny_sweep.yaml"


# --- planning: CEM and the latent cost (REFERENCE.md, "Planning and evaluation protocol") ---


@pytest.mark.parametrize("planner", ["cem", "mppi"])
def test_every_sampling_iteration_scores_the_current_mean_as_its_first_candidate(planner):
    """LeWM's CEM: "the first sample is the current mean", so a refit can never lose the best plan so far."""
    config = PlannerConfig(name=planner, samples=12, iterations=3, elites=3, horizon=2, receding=2)
    target = torch.linspace(-0.5, 0.5, 6).reshape(1, 2, 3)
    scored = []

    def distance(candidates: torch.Tensor) -> torch.Tensor:  # (K, S, H, A) -> (K, S)
        return (candidates - target).square().sum(dim=(-2, -1))

    def cost(candidates: torch.Tensor) -> torch.Tensor:
        scored.append(candidates.clone())
        return distance(candidates)

    start = torch.full((2, 2, 3), 0.25)  # (K, H, A)
    optimiser = make_planner(config)
    optimiser.optimize(cost, start, torch.Generator().manual_seed(0))
    assert len(scored) == config.iterations and torch.equal(scored[0][:, 0], start)
    mean, std = start, torch.full_like(start, config.init_std)
    for previous, following in zip(scored[:-1], scored[1:], strict=True):  # each refit mean is scored next
        mean, std = optimiser.refit(previous, distance(previous), std)
        torch.testing.assert_close(following[:, 0], mean)


class Integrator(WorldModel):
    """A test model whose latent is a point and whose action block moves it: ẑ_{t+1} = z_t + a_t."""

    def __init__(self) -> None:
        super().__init__()
        self.history = 1

    def encode(self, pixels):
        raise NotImplementedError("the cost is given latents directly")

    def predict(self, z_hist, actions):  # (B, T, 1, D), (B, T, D) -> (B, T, 1, D)
        return z_hist + actions[:, :, None]

    def loss(self, batch):
        raise NotImplementedError("nothing to train")

    @property
    def tokens_per_frame(self):
        return 1


def test_latent_cost_is_the_terminal_squared_error_not_a_sum_over_the_horizon():
    """LeWM's cost: ‖ẑ_H − z_goal‖² at the last planned step only; a detour that ends at the goal costs 0."""
    z_hist, goal = torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 2)  # start at the goal
    detour = torch.tensor([[0.5, 0.5], [0.5, -0.5], [-1.0, 0.0]])  # (H, A): away, then back
    stay = torch.zeros(3, 2)
    nearby = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0]])
    candidates = torch.stack([detour, stay, nearby])[None]  # (K=1, S=3, H, A)
    cost = LatentCost(Integrator(), z_hist, torch.zeros(1, 0, 2), goal)(candidates)
    torch.testing.assert_close(cost, torch.tensor([[0.0, 0.0, 0.01]]))
    assert cost[0, 0] < cost[0, 2]  # the detour ends nearer the goal than the plan that barely moves


# --- LeWM: predictor dropout and SIGReg per time step (REFERENCE.md, LeWM "Method") ---


def tiny_lewm(**overrides) -> WorldModel:
    torch.manual_seed(0)
    return build_model("lewm", "tiny", image_size=32, action_dim=4, history=3, **overrides)


def block_dropouts(block: nn.Module) -> list[float]:
    """Every dropout probability inside one predictor block: the attention's own and each nn.Dropout."""
    return [block.attn.dropout, *(m.p for m in block.modules() if isinstance(m, nn.Dropout))]


@pytest.mark.parametrize("dropout", [None, 0.3])
def test_lewm_predictor_dropout_is_the_published_one_and_reaches_attention_and_mlp(dropout):
    """Dropout 0.1 inside the predictor's attention and MLP (paper ablation: 0 → 78%, 0.1 → 96% on Push-T)."""
    assert LeWMConfig().predictor_dropout == 0.1
    model = tiny_lewm(**({} if dropout is None else {"predictor_dropout": dropout}))
    expected = 0.1 if dropout is None else dropout
    assert model.config.predictor_dropout == expected
    for block in model.predictor.blocks:
        found = block_dropouts(block)
        assert len(found) >= 4 and all(p == expected for p in found), found  # attention, its output, MLP twice
    block = model.predictor.blocks[0].train()
    torch.nn.init.normal_(block.modulation[-1].weight, std=0.5)  # open the AdaLN-zero gates
    x, cond = torch.randn(2, 3, block.norm1.normalized_shape[0]), torch.randn(2, 3, block.norm1.normalized_shape[0])
    with torch.no_grad():
        assert not torch.allclose(block(x, cond, is_causal=True), block(x, cond, is_causal=True))
        block.eval()
        torch.testing.assert_close(block(x, cond, is_causal=True), block(x, cond, is_causal=True))


def test_lewm_sigreg_is_taken_per_time_step_and_averaged(monkeypatch):
    """SIGReg on all encoder embeddings per time step, (T, B, D), averaged — never with time folded into the batch."""
    model = tiny_lewm().train()
    directions = sigreg_module.random_directions(model.config.latent_dim, 64, torch.device("cpu"))
    monkeypatch.setattr(sigreg_module, "random_directions", lambda dim, num, device, generator=None: directions)
    torch.manual_seed(1)
    batch = {"pixels": torch.rand(8, 4, 3, 32, 32), "actions": torch.rand(8, 4, 4) * 2 - 1}
    with torch.no_grad():
        measured = model.loss(batch)["sigreg"]
        z = model.encode(batch["pixels"])  # (B, T, 1, D): the same embeddings (BatchNorm on the same batch)
        per_step = torch.stack([sigreg(z[:, t, 0]) for t in range(z.shape[1])])  # (T,)
        folded = sigreg(rearrange(z, "b t n d -> (b t n) d"))
    torch.testing.assert_close(measured, per_step.mean())
    assert not torch.isclose(measured, folded, rtol=1e-3)


# --- PLDM: variance across the batch and across time (Sobal et al.; REFERENCE.md "Baselines") ---


@pytest.mark.parametrize("still_in", ["time", "batch"])
def test_pldm_time_variance_is_taken_across_the_frames_of_each_window(still_in):
    """L_time-var hinges the spread of each window's latents over its frames; L_var the spread over the batch."""
    torch.manual_seed(2)
    model = build_model("pldm", "tiny", image_size=32, action_dim=4, history=1)
    width = model.config.latent_dim
    # Latents with a spread of std 3 (far above the hinge's target 1) along one axis and none along the other.
    spread = 3 * torch.randn(8, 1, 1, width) if still_in == "time" else 3 * torch.randn(1, 5, 1, width)
    z = spread.expand(8, 5, 1, width)  # (B, T, 1, D)
    model.encode = lambda pixels: z.clone()  # latents that do not move in time, or not across the batch
    terms = model.loss({"pixels": torch.zeros(8, 5, 3, 32, 32), "actions": torch.zeros(8, 5, 4)})
    hinge = 1 - model.config.std_eps**0.5  # relu(target − std) with no spread at all
    frozen, moving = ("time_var", "var") if still_in == "time" else ("var", "time_var")
    assert terms[frozen].item() == pytest.approx(hinge, abs=1e-6)
    assert terms[moving].item() < 0.05


# --- DINO-WM: the action enters the predictor (Zhou et al.; REFERENCE.md "Baselines") ---


def test_dino_wm_prediction_depends_on_the_action():
    """Actions are embedded and concatenated to every patch: different actions, different predictions."""
    torch.manual_seed(3)
    model = build_model("dino_wm", "tiny", image_size=32, action_dim=4, history=2).eval()
    z = torch.randn(2, 2, model.tokens_per_frame, model.latent_dim)  # (B, T, N, D): the predictor's input
    actions = torch.rand(2, 2, 4) * 2 - 1
    with torch.no_grad():
        moved = model.predict(z, actions)
        other = model.predict(z, -actions)
        again = model.predict(z, actions)
    torch.testing.assert_close(moved, again)
    assert (moved - other).abs().mean() > 1e-3 * moved.abs().mean()


# --- matched controls: every model, seed and condition runs the same cases (lerobot #4619) ---


def test_every_model_seed_and_condition_runs_the_same_start_goal_pairs(tmp_path, cache_dir):
    """Paired comparisons need the same cases, not just the same case seeds: same episode index, start and goal."""
    overrides = [
        "models=[{name:random},{name:oracle}]",
        "seeds=[0,1]",
        "protocol.episodes=4",
        f"results_dir={tmp_path}",
    ]
    specs = expand_trials(load_sweep(TINY_SWEEP, overrides))
    assert len(specs) == 4 and len({(s.model.name, s.seed) for s in specs}) == 4
    runs = {}
    for spec in specs:
        for row in run_trial(spec)[1]:
            runs.setdefault((spec.model.name, spec.seed, row.condition), []).append(
                (row.episode, row.case_seed, tuple(row.start), tuple(row.goal))
            )
    assert len(runs) == 4 * 2  # two conditions each
    cases = {key: sorted(rows) for key, rows in runs.items()}
    reference = next(iter(cases.values()))
    assert len({start for _, _, start, _ in reference}) == len(reference)  # the cases themselves differ
    for key, rows in cases.items():
        assert rows == reference, key
