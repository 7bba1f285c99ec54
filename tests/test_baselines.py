"""Baselines in the zoo: each learns on Two-Room through the shared training loop, rolls out in the
planner's shapes, and DINO-WM's encoder loads DINOv2 weights exactly and stays frozen."""

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from harness.eval.planners import CEM, LatentCost, PlannerConfig
from harness.trial.training import TrainConfig, train
from models.blocks.imagenet import IMAGENET_MEAN, IMAGENET_STD
from models.dino_wm.dinov2 import DinoV2Architecture, to_hub_layout
from models.pldm.model import covariance_penalty, variance_hinge
from models.registry import build_model
from models.world_model import WorldModel
from tasks.base import make_task
from tasks.data import WindowDataset, collect

IMAGE_SIZE = 64
FRAMESKIP = 5
ACTION_DIM = FRAMESKIP * 2  # Two-Room: 2-D actions, blocks of 5
HISTORY = 1  # Two-Room


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    """Four-frame windows of expert Two-Room data at 64×64."""
    task = make_task("two_room", image_size=IMAGE_SIZE)
    episodes = collect(
        task, "expert", episodes=6, steps=30, seed=3, noise=0.3, cache_dir=tmp_path_factory.mktemp("data"),
        workers=1, progress=False,
    )  # fmt: skip
    return WindowDataset(episodes, num_frames=4, frameskip=FRAMESKIP)


def short_training(steps: int = 30, batch_size: int = 8) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=1e-3, log_every=steps // 3, bf16=False)


# --- a small DINOv2 checkpoint in the torch-hub layout ----------------------------------------------

DINO = {"dim": 128, "depth": 2, "patch": 14, "grid": 5, "registers": 4}  # heads = dim / 64 = 2


def dinov2_hub_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with every key and shape of a DINOv2 ViT (LayerScale, registers, mask token)."""
    g = torch.Generator().manual_seed(seed)
    dim, patch = DINO["dim"], DINO["patch"]

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "cls_token": rand(1, 1, dim),
        "pos_embed": rand(1, 1 + DINO["grid"] ** 2, dim),
        "register_tokens": rand(1, DINO["registers"], dim),
        "mask_token": rand(1, dim),
        "patch_embed.proj.weight": rand(dim, 3, patch, patch, scale=0.05),
        "patch_embed.proj.bias": rand(dim),
        "norm.weight": 1 + rand(dim),
        "norm.bias": rand(dim),
    }
    for i in range(DINO["depth"]):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": 1 + rand(dim),
            p + "norm1.bias": rand(dim),
            p + "attn.qkv.weight": rand(3 * dim, dim, scale=0.1),
            p + "attn.qkv.bias": rand(3 * dim),
            p + "attn.proj.weight": rand(dim, dim, scale=0.1),
            p + "attn.proj.bias": rand(dim),
            p + "ls1.gamma": rand(dim, scale=0.5),
            p + "norm2.weight": 1 + rand(dim),
            p + "norm2.bias": rand(dim),
            p + "mlp.fc1.weight": rand(4 * dim, dim, scale=0.1),
            p + "mlp.fc1.bias": rand(4 * dim),
            p + "mlp.fc2.weight": rand(dim, 4 * dim, scale=0.1),
            p + "mlp.fc2.bias": rand(dim),
            p + "ls2.gamma": rand(dim, scale=0.5),
        }
    return state


def reference_dinov2(state: dict[str, torch.Tensor], images: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's forward written out from the raw hub state dict: normalised images -> patch tokens."""
    dim, heads, registers = DINO["dim"], DINO["dim"] // 64, DINO["registers"]
    batch = images.shape[0]
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=DINO["patch"])
    x = x.flatten(2).transpose(1, 2)  # (B, P, D)
    pos = state["pos_embed"]
    side = DINO["grid"]
    patch_pos = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    cls = state["cls_token"].expand(batch, -1, -1) + pos[:, :1]
    x = torch.cat([cls, state["register_tokens"].expand(batch, -1, -1), x + patch_pos], dim=1)
    for i in range(DINO["depth"]):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, state[p + "attn.qkv.weight"], state[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), dim=-1)
        attended = (attention @ v).transpose(1, 2).reshape(batch, -1, dim)
        x = x + state[p + "ls1.gamma"] * F.linear(attended, state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        h = F.layer_norm(x, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])),
                     state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])  # fmt: skip
        x = x + state[p + "ls2.gamma"] * h
    x = F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    return x[:, 1 + registers :]


def to_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {("reg_token" if key == "register_tokens" else key): value for key, value in state.items()}


def write_safetensors(path, state: dict[str, torch.Tensor]) -> None:
    """The safetensors format: 8-byte header length, JSON header, raw little-endian float32 data."""
    header, chunks, offset = {}, [], 0
    for name, tensor in state.items():
        data = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))


@pytest.fixture(scope="module")
def dinov2_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14_small.pth"
    torch.save(dinov2_hub_state(), path)
    return path


# --- every baseline -------------------------------------------------------------------------------------


def tiny(name: str, image_size: int = IMAGE_SIZE, size: str = "tiny", **overrides) -> WorldModel:
    return build_model(name, size, image_size, ACTION_DIM, history=HISTORY, **overrides)


@pytest.mark.parametrize("name", ["dreamer", "pldm", "pldm-vit", "dino_wm"])
def test_baseline_loss_falls_on_two_room(name, windows, dinov2_checkpoint):
    overrides = {"encoder_path": str(dinov2_checkpoint)} if name == "dino_wm" else {}
    model = tiny(name.split("-")[0], size="vit_tiny" if name == "pldm-vit" else "tiny", **overrides)
    # PLDM's batch covariance has rank < batch size, so its VICReg terms need a wider batch to move.
    batch_size = {"dreamer": 4, "pldm": 16, "pldm-vit": 32, "dino_wm": 8}[name]
    stats = train(model, windows, short_training(steps=24, batch_size=batch_size), "cpu", seed=0)
    first, last = stats.first_loss, stats.final_loss  # step 1; mean of the last 2 steps
    assert math.isfinite(last)
    assert last < 0.9 * first, f"{name}: loss {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("name", ["dreamer", "dreamer-stochastic", "dreamer-features", "pldm", "pldm-vit", "dino_wm"])
def test_planning_rollout_of_16_candidates_has_the_planners_shapes(name, windows, dinov2_checkpoint):
    overrides = {
        "dino_wm": {"encoder_path": str(dinov2_checkpoint)},
        "dreamer-stochastic": {"plan_latent": "stochastic"},
        "dreamer-features": {"plan_latent": "features"},
    }
    size = "vit_tiny" if name == "pldm-vit" else "tiny"
    model = tiny(name.split("-")[0], size=size, **overrides.get(name, {})).eval()
    history, horizon, candidates = model.history, 5, 16
    frames = torch.stack([windows[i]["pixels"] for i in range(2)])  # (2, 4, 3, H, W)
    with torch.inference_mode():
        z_hist = model.encode(frames[:, :history])  # (2, h, N, D)
        z_goal = model.encode(frames[:, -1:])[:, -1]  # (2, N, D)
        tokens, width = z_hist.shape[2:]
        assert tokens == model.tokens_per_frame
        past = torch.zeros(2, history - 1, ACTION_DIM)
        plan = torch.rand(2, horizon, ACTION_DIM) * 2 - 1
        assert model.rollout(z_hist, plan, past).shape == (2, horizon, tokens, width)
        cost = LatentCost(model, z_hist, past, z_goal)
        sampled = torch.rand(2, candidates, horizon, ACTION_DIM) * 2 - 1
        costs = cost(sampled)
        assert costs.shape == (2, candidates) and torch.isfinite(costs).all()
        best = CEM(PlannerConfig(samples=candidates, iterations=2, elites=4, horizon=horizon)).optimize(
            cost, torch.zeros(2, horizon, ACTION_DIM), torch.Generator().manual_seed(0)
        )
    assert best.shape == (2, horizon, ACTION_DIM) and torch.isfinite(best).all()  # standardised units: unbounded


@pytest.mark.parametrize("name", ["dreamer", "pldm", "dino_wm"])
def test_presets_report_tokens_and_parameters(name, dinov2_checkpoint):
    overrides = {"encoder_path": str(dinov2_checkpoint)} if name == "dino_wm" else {}
    model = tiny(name, **overrides)
    assert model.num_params == sum(p.numel() for p in model.parameters()) > 0
    expected_tokens = {"dreamer": 1, "pldm": 1, "dino_wm": (56 // 14) ** 2}[name]  # DINOv2: 64 px -> 56 = 4 × 14
    assert model.tokens_per_frame == expected_tokens
    with pytest.raises(ValueError, match="not a config field"):
        tiny(name, no_such_field=1)
    with pytest.raises(ValueError, match="known sizes"):
        build_model(name, "huge", IMAGE_SIZE, ACTION_DIM, history=HISTORY)


def test_paper_presets_follow_the_published_sizes():
    dino = build_model("dino_wm", "paper", 224, ACTION_DIM, history=HISTORY)
    assert dino.tokens_per_frame == 256 and dino.latent_dim == 384  # ViT-S/14 at 224×224
    assert tiny("dino_wm").tokens_per_frame == 64  # the tiny self-supervised encoder: patch 8 at 64×64
    dreamer = build_model("dreamer", "paper", IMAGE_SIZE, ACTION_DIM, history=HISTORY).config
    assert (dreamer.stoch, dreamer.classes, dreamer.free_nats, dreamer.unimix) == (32, 32, 1.0, 0.01)


# --- Dreamer ---------------------------------------------------------------------------------------------


def test_dreamer_rollout_carries_the_recurrent_state_like_chained_predictions():
    model = tiny("dreamer", plan_latent="features").eval()  # h ++ s: a prediction holds the whole state
    z = model.encode(torch.rand(3, 1, 3, IMAGE_SIZE, IMAGE_SIZE))
    plan = torch.rand(3, 4, ACTION_DIM) * 2 - 1
    imagined = model.rollout(z, plan)
    chained, latent = [], z
    for step in range(plan.shape[1]):
        latent = model.predict(latent, plan[:, step : step + 1])
        chained.append(latent)
    torch.testing.assert_close(imagined, torch.cat(chained, dim=1))
    # The deterministic state moves with the first action: the plan's start is remembered at the end.
    other = plan.clone()
    other[:, 0] = -other[:, 0]
    assert not torch.allclose(imagined[:, -1], model.rollout(z, other)[:, -1])


def test_dreamer_stochastic_latent_still_imagines_with_the_recurrent_state():
    torch.manual_seed(0)
    full = tiny("dreamer", plan_latent="features").eval()
    stochastic = tiny("dreamer", plan_latent="stochastic").eval()
    stochastic.load_state_dict(full.state_dict())
    pixels, plan = torch.rand(3, 1, 3, IMAGE_SIZE, IMAGE_SIZE), torch.rand(3, 4, ACTION_DIM) * 2 - 1
    deter = full.config.deter
    z_full, z_stochastic = full.encode(pixels), stochastic.encode(pixels)
    assert z_stochastic.shape[-1] == z_full.shape[-1] - deter
    torch.testing.assert_close(z_stochastic, z_full[..., deter:])
    torch.testing.assert_close(stochastic.rollout(z_stochastic, plan), full.rollout(z_full, plan)[..., deter:])


def test_dreamer_probabilities_latent_is_the_posterior_when_encoding_and_the_prior_when_imagining():
    torch.manual_seed(0)
    probabilities = tiny("dreamer").eval()
    stochastic = tiny("dreamer", plan_latent="stochastic").eval()
    stochastic.load_state_dict(probabilities.state_dict())
    pixels, plan = torch.rand(3, 1, 3, IMAGE_SIZE, IMAGE_SIZE), torch.rand(3, 4, ACTION_DIM) * 2 - 1
    classes = probabilities.config.classes
    z = probabilities.encode(pixels)
    imagined = probabilities.rollout(z, plan)
    for latent in (z, imagined):
        per_variable = latent.unflatten(-1, (-1, classes))  # (B, T, 1, S, K)
        torch.testing.assert_close(per_variable.sum(-1), torch.ones_like(per_variable[..., 0]))
    # The modes of those distributions are the one-hot states the RSSM carries.
    modes = torch.nn.functional.one_hot(imagined.unflatten(-1, (-1, classes)).argmax(-1), classes).flatten(-2)
    torch.testing.assert_close(modes.float(), stochastic.rollout(stochastic.encode(pixels), plan))


def test_dreamer_planning_cost_ranks_the_plan_that_reaches_the_goal_among_the_best(windows):
    """A frame encoded alone has h = h_0: a cost on h ++ s adds ‖h_H − h_0‖², blind to the goal."""
    torch.manual_seed(0)
    # deter 256 against 16 variables: the paper preset's balance (512 against 32), where that term dominates.
    model = tiny("dreamer", deter=256)
    train(model, windows, short_training(steps=400, batch_size=4), "cpu", seed=0)
    model.eval()
    features = tiny("dreamer", deter=256, plan_latent="features").eval()
    features.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(1)
    ranks, h_term_correlations = [], []
    for index in range(0, len(windows), len(windows) // 8):
        window = windows[index]  # start: frame 0; goal: frame 3, three action blocks later
        plans = windows.scaler.transform(torch.rand(300, 3, ACTION_DIM, generator=generator) * 2 - 1)  # model units
        plans[0] = window["actions"][:3]  # the recorded plan, which reaches the goal
        with torch.no_grad():
            start, goal = model.encode(window["pixels"][None, :1]), model.encode(window["pixels"][None, 3:4])[:, 0]
            cost = LatentCost(model, start, torch.zeros(1, 0, ACTION_DIM), goal)(plans[None])[0]  # (300,)
            h_final = features.rollout(features.encode(window["pixels"][None, :1]).expand(300, -1, -1, -1), plans)
            h_term = h_final[:, -1, 0, : features.config.deter].square().sum(-1)  # ‖h_H − h_0‖², h_0 = 0
        ranks.append(float((cost < cost[0]).float().mean()))
        h_term_correlations.append(spearman(cost, h_term))
    assert statistics.median(ranks) < 0.2, ranks  # features h ++ s: 0.91 and 0.93 at seeds 0 and 1
    assert statistics.median(h_term_correlations) < 0.5, h_term_correlations  # features: ~0.7–1.0


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two 1-D tensors (no ties expected)."""
    ranks = [x.argsort().argsort().float() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def kl_gradients(**overrides) -> tuple[float, float]:
    """Gradient norms that the KL part of Dreamer's loss sends to the prior and the posterior nets (one frame)."""
    torch.manual_seed(0)
    model = tiny("dreamer", **overrides)
    batch = {"pixels": torch.rand(4, 1, 3, IMAGE_SIZE, IMAGE_SIZE), "actions": torch.zeros(4, 1, ACTION_DIM)}
    terms = model.loss(batch)
    (terms["loss"] - terms["recon"]).backward()

    def norm(module):
        return sum(float(p.grad.norm()) if p.grad is not None else 0.0 for p in module.parameters())

    return norm(model.prior_net), norm(model.posterior_net)


def test_dreamer_kl_balancing_trains_each_side_through_its_own_term():
    prior, posterior = kl_gradients(free_nats=0.0, kl_dyn=1.0, kl_rep=0.0)
    assert prior > 0 and posterior == 0  # KL[sg(q) ‖ p] moves only the prior
    prior, posterior = kl_gradients(free_nats=0.0, kl_dyn=0.0, kl_rep=1.0)
    assert prior == 0 and posterior > 0  # KL[q ‖ sg(p)] moves only the posterior
    assert kl_gradients(free_nats=1e3) == (0.0, 0.0)  # below the free nats, the KL is not penalised


# --- PLDM -------------------------------------------------------------------------------------------------


def test_pldm_defaults_are_the_published_push_t_weights():
    config = tiny("pldm").config
    weights = (config.alpha_var, config.beta_cov, config.gamma_time_sim, config.zeta_time_var, config.nu_time_cov)
    assert weights == (18.0, 12.0, 0.2, 0.7, 0.0) and config.mu_idm == 0.0


def test_pldm_of_lewms_comparison_is_lewms_vit_and_transformer_over_the_protocols_history():
    model = build_model("pldm", "vit_paper", 224, ACTION_DIM, history=3)
    c = model.config
    assert (c.architecture, model.history, c.teacher_forcing) == ("vit", 3, True)
    weights = (c.alpha_var, c.beta_cov, c.gamma_time_sim, c.zeta_time_var, c.nu_time_cov, c.mu_idm)
    assert weights == (18.0, 12.0, 0.2, 0.7, 0.0, 0.0)  # REFERENCE.md: (18, 12, 0.2, 0.7, 0, 0)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    predictor = sum(p.numel() for p in model.predictor.parameters())
    assert 5.0e6 < encoder < 6.0e6 and 10.0e6 < predictor < 11.5e6  # LeWM's ViT-Tiny and predictor
    assert tiny("pldm").history == 1  # the conv PLDM is Markov, whatever the protocol's history


def test_vit_pldm_is_teacher_forced_causally_on_windows_of_its_history():
    torch.manual_seed(0)
    model = build_model("pldm", "vit_tiny", IMAGE_SIZE, ACTION_DIM, history=2).eval()
    assert model.history == 2  # the protocol's, not the preset's 3
    for block in model.predictor.blocks:  # give the zero-initialised AdaLN modulation some weight
        torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
    z, actions = torch.randn(2, 3, 1, model.config.latent_dim), torch.rand(2, 3, ACTION_DIM)
    changed = z.clone()
    changed[:, 2] += 1.0
    with torch.no_grad():
        a, b = model.predict(z, actions), model.predict(changed, actions)
        torch.testing.assert_close(a[:, :2], b[:, :2])  # output t never sees a later frame
        assert not torch.allclose(a[:, 2], b[:, 2])
        # A 4-frame window with history 2 is scored as its two 3-frame windows.
        batch = {"pixels": torch.rand(2, 4, 3, IMAGE_SIZE, IMAGE_SIZE), "actions": torch.rand(2, 4, ACTION_DIM)}
        z = model.encode(batch["pixels"])
        expected = torch.stack(
            [(model.predict(z[:, s : s + 2], batch["actions"][:, s : s + 2]) - z[:, s + 1 : s + 3]).square().mean()
             for s in range(2)]
        ).mean()  # fmt: skip
        torch.testing.assert_close(model.loss(batch)["pred"], expected)


def test_pldm_loss_is_the_weighted_sum_of_its_seven_terms(windows):
    torch.manual_seed(0)
    weights = {"alpha_var": 2.0, "beta_cov": 3.0, "gamma_time_sim": 5.0, "zeta_time_var": 7.0, "nu_time_cov": 11.0}
    model = tiny("pldm", mu_idm=13.0, **weights)
    batch = {name: torch.stack([windows[i][name] for i in range(6)]) for name in ("pixels", "actions")}
    terms = model.loss(batch)
    names = {"alpha_var": "var", "beta_cov": "cov", "gamma_time_sim": "time_sim", "zeta_time_var": "time_var",
             "nu_time_cov": "time_cov"}  # fmt: skip
    expected = terms["pred"] + 13.0 * terms["idm"] + sum(w * terms[names[k]] for k, w in weights.items())
    torch.testing.assert_close(terms["loss"].detach(), expected)


def test_vicreg_terms_separate_collapsed_from_spread_latents():
    spread = torch.randn(512, 16)
    collapsed = torch.zeros(512, 16) + torch.randn(1, 16)
    assert variance_hinge(collapsed, 1.0, 1e-4) > 0.95
    assert variance_hinge(spread, 1.0, 1e-4) < 0.1
    correlated = torch.randn(512, 1).expand(512, 16) + 0.01 * torch.randn(512, 16)
    assert covariance_penalty(correlated) > 10 * covariance_penalty(spread)


# --- DINO-WM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["hub.pth", "timm.pth", "hub.safetensors"])
def test_dinov2_checkpoint_loads_into_the_encoder_exactly(layout, tmp_path):
    state = dinov2_hub_state(seed=1)
    kind, suffix = layout.split(".")
    path = tmp_path / f"dinov2.{suffix}"
    saved = to_timm_layout(state) if kind == "timm" else state
    if suffix == "safetensors":
        write_safetensors(path, saved)
    else:
        torch.save(saved, path)
    model = tiny("dino_wm", encoder_path=str(path), image_size=56)  # 56 = 4 patches of 14
    pixels = torch.rand(2, 3, 3, 56, 56)
    z = model.encode(pixels)
    assert z.shape == (2, 3, 16, DINO["dim"]) and model.tokens_per_frame == 16
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = reference_dinov2(state, (pixels.flatten(0, 1) - mean) / std, grid=4)
    torch.testing.assert_close(z.flatten(0, 1), expected, atol=1e-4, rtol=1e-4)
    assert model.describe()["encoder"].startswith(f"dinov2:dinov2.{suffix}")


def test_dinov2_architecture_is_read_from_the_checkpoint():
    arch = DinoV2Architecture.of(to_hub_layout(to_timm_layout(dinov2_hub_state())))
    assert (arch.dim, arch.depth, arch.patch_size, arch.registers, arch.heads) == (128, 2, 14, 4, 2)
    with pytest.raises(ValueError, match="not a DINOv2"):
        DinoV2Architecture.of({"weight": torch.zeros(1)})


def test_dino_wm_encoder_stays_frozen_while_the_predictor_trains(windows, dinov2_checkpoint):
    model = tiny("dino_wm", encoder_path=str(dinov2_checkpoint))
    before = {name: p.clone() for name, p in model.encoder.named_parameters()}
    predictor_before = [p.clone() for p in model.predictor.parameters()]
    train(model, windows, short_training(steps=6), "cpu", seed=0)
    for name, p in model.encoder.named_parameters():
        assert p.grad is None and not p.requires_grad, name
        assert torch.equal(p, before[name]), name
    assert any(not torch.equal(a, b) for a, b in zip(predictor_before, model.predictor.parameters(), strict=True))
    assert not model.encoder.training and model.training


def test_dino_wm_without_weights_pretrains_a_masked_autoencoder_never_called_dinov2(windows, tmp_path):
    model = tiny("dino_wm", selfsup_steps=12, selfsup_batch=2)
    with pytest.raises(RuntimeError, match="prepare"):
        model.encode(windows[0]["pixels"][None])
    initial = {name: p.clone() for name, p in model.encoder.named_parameters()}
    train(model, windows, short_training(steps=3), "cpu", seed=0)  # prepare() pretrains, then the encoder is frozen
    facts = model.describe()
    assert facts["encoder"] == "selfsup-mae-12" and "dinov2" not in facts["encoder"]
    start, end = (float(x) for x in facts["selfsup_loss"].split("->"))
    assert end < start
    assert any(not torch.equal(p, initial[name]) for name, p in model.encoder.named_parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    # A checkpoint restores which encoder it holds, and prepare() does not pretrain it again.
    torch.save(model.state_dict(), tmp_path / "model.pt")
    restored = tiny("dino_wm", selfsup_steps=12, selfsup_batch=2)
    restored.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    encoder_weights = [p.clone() for p in restored.encoder.parameters()]
    restored.prepare(windows)
    assert restored.describe() == facts
    assert all(torch.equal(a, b) for a, b in zip(encoder_weights, restored.encoder.parameters(), strict=True))


def test_dino_wm_rows_are_named_dino_wm_only_with_dinov2_weights(dinov2_checkpoint):
    assert tiny("dino_wm", encoder_path=str(dinov2_checkpoint)).entry_name("dino_wm") == "dino_wm"
    assert tiny("dino_wm").entry_name("dino_wm") == "dino_wm[mae]"  # the self-supervised stand-in


def test_dino_wm_predictor_is_frame_causal(dinov2_checkpoint):
    model = tiny("dino_wm", encoder_path=str(dinov2_checkpoint)).eval()
    z = torch.randn(2, 3, model.tokens_per_frame, DINO["dim"])
    actions = torch.rand(2, 3, ACTION_DIM)
    changed = z.clone()
    changed[:, 2] += 1.0  # the last frame
    with torch.no_grad():
        a, b = model.predict(z, actions), model.predict(changed, actions)
    torch.testing.assert_close(a[:, :2], b[:, :2])  # earlier outputs never see a later frame
    assert not torch.allclose(a[:, 2], b[:, 2])
