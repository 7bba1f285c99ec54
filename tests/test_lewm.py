"""LeWM and the shared transformer blocks on random tensors: sizes, shapes, causality, AdaLN-zero, the loss."""

from __future__ import annotations

import pytest
import torch

from models.blocks.vit import Attention, Block, ConditionedBlock, attend, frame_causal_mask
from models.lewm.model import SIZES, LeWM, build
from models.registry import build_model

ACTION_DIM = 10  # frameskip 5 × 2-D actions
HISTORY = 3  # Push-T


@pytest.fixture(scope="module")
def tiny() -> LeWM:
    torch.manual_seed(0)
    return build("tiny", image_size=64, action_dim=ACTION_DIM, history=HISTORY)


def random_batch(batch: int, frames: int, image_size: int = 64) -> dict[str, torch.Tensor]:
    return {
        "pixels": torch.rand(batch, frames, 3, image_size, image_size),
        "actions": torch.rand(batch, frames, ACTION_DIM) * 2 - 1,
        "states": torch.rand(batch, frames, 2),
    }


def test_tiny_lewm_has_about_half_a_million_parameters(tiny):
    assert 400_000 < tiny.num_params < 800_000
    assert tiny.tokens_per_frame == 1
    assert tiny.history == tiny.config.history == HISTORY


def test_paper_lewm_matches_published_parameter_counts():
    model = build_model("lewm", "paper", image_size=224, action_dim=ACTION_DIM, history=HISTORY)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    predictor = sum(p.numel() for p in model.predictor.parameters())
    # REFERENCE.md: ViT-Tiny ~5M, predictor ~10M, total advertised ~15M (config counts give ~17–18M)
    assert 5.0e6 < encoder < 6.0e6
    assert 10.0e6 < predictor < 11.5e6
    assert 15.0e6 < model.num_params < 18.5e6
    model.eval()
    with torch.no_grad():
        z = model.encode(torch.rand(1, 1, 3, 224, 224))
        assert z.shape == (1, 1, 1, 192)
        assert model.predict(z, torch.zeros(1, 1, ACTION_DIM)).shape == (1, 1, 1, 192)


def test_encode_gives_one_latent_per_frame(tiny):
    z = tiny.encode(random_batch(3, 4)["pixels"])
    assert z.shape == (3, 4, 1, SIZES["tiny"].latent_dim)


def test_predict_is_causal_in_time(tiny):
    tiny.eval()
    torch.manual_seed(1)
    z = torch.randn(2, 3, 1, SIZES["tiny"].latent_dim)
    actions = torch.rand(2, 3, ACTION_DIM)
    with torch.no_grad():
        for block in tiny.predictor.blocks:  # give the zero-initialised modulation some weight
            torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
        before = tiny.predict(z, actions)
        z_later, actions_later = z.clone(), actions.clone()
        z_later[:, 2] += 5.0
        actions_later[:, 2] = -actions_later[:, 2]
        after = tiny.predict(z_later, actions_later)
        for block in tiny.predictor.blocks:
            torch.nn.init.zeros_(block.modulation[-1].weight)
    torch.testing.assert_close(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2], after[:, 2])


def test_predictor_drops_out_inside_its_blocks_but_never_on_its_input_embeddings():
    """The authors' library: dropout 0.1 in attention and MLP, none on the embeddings (REFERENCE.md)."""
    paper, tiny = SIZES["paper"], SIZES["tiny"]
    assert (paper.predictor_dropout, paper.predictor_emb_dropout) == (0.1, 0.0)
    assert (tiny.predictor_dropout, tiny.predictor_emb_dropout) == (0.1, 0.1)  # ours: as its figures were measured
    torch.manual_seed(6)
    model = build("tiny", image_size=64, action_dim=ACTION_DIM, history=HISTORY, predictor_emb_dropout=0.0).train()
    latents = torch.randn(4, 3, SIZES["tiny"].latent_dim)
    with torch.no_grad():
        actions = model.action_encoder(torch.rand(4, 3, ACTION_DIM) * 2 - 1)
        # AdaLN-zero: every block starts as the identity, so only dropout on the input embeddings
        # could make two training-mode passes differ.
        torch.testing.assert_close(model.predictor(latents, actions), model.predictor(latents, actions))
        for block in model.predictor.blocks:  # open the gates: the blocks' own dropout now shows
            torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
        assert not torch.allclose(model.predictor(latents, actions), model.predictor(latents, actions))
        model.eval()
        torch.testing.assert_close(model.predictor(latents, actions), model.predictor(latents, actions))


def test_adaln_zero_block_starts_as_identity_then_learns_to_use_the_condition():
    torch.manual_seed(2)
    block = ConditionedBlock(dim=32, heads=4, mlp_dim=64)
    x, cond = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    torch.testing.assert_close(block(x, cond, is_causal=True), x)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    (block(x, cond, is_causal=True) - 1.0).square().mean().backward()
    optimizer.step()
    assert not torch.allclose(block(x, cond, is_causal=True), block(x, -cond, is_causal=True))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_attention_over_one_token_is_its_value_projection_as_sdpa_computes_it(qkv_bias):
    """The one-token shortcut (no query, no key, no SDPA: a history-1 rollout step) gives attention's output."""
    torch.manual_seed(0)
    attention = Attention(32, heads=4, dim_head=8, dropout=0.1, qkv_bias=qkv_bias).eval()
    if qkv_bias:
        torch.nn.init.normal_(attention.qkv.bias)
    x = torch.randn(7, 1, 32)
    q, k, v = attention.qkv(x).reshape(7, 1, 3, 4, 8).permute(2, 0, 3, 1, 4)  # (3, B, heads, 1, 8)
    expected = attention.out(torch.nn.functional.scaled_dot_product_attention(q, k, v).permute(0, 2, 1, 3).flatten(2))
    torch.testing.assert_close(attention(x), expected)
    torch.testing.assert_close(attention(x, is_causal=True), expected)


@pytest.mark.parametrize("masking", ["none", "mask", "causal", "last_queries"])
def test_attention_written_out_on_a_cpu_is_scaled_dot_product_attention(masking):
    """vit.attend (a CPU's attention: the three operations written out) gives SDPA's outputs and gradients, with no
    mask, a boolean mask, a causal one and a mask's last rows for fewer queries; and SDPA's to bf16's rounding."""
    generator = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(3, 2, 7, 8, generator=generator, requires_grad=True) for _ in range(3))
    mask = torch.rand(3, 1, 7, 7, generator=generator) < 0.6
    mask |= torch.eye(7, dtype=torch.bool)  # every query sees itself, as every mask in the zoo lets it
    queries = q[:, :, -3:] if masking == "last_queries" else q  # the last 3 of 7 positions attend to all 7
    given = {
        "none": {},
        "mask": {"mask": mask},
        "causal": {"is_causal": True},
        "last_queries": {"mask": mask[..., -3:, :]},
    }[masking]
    written = attend(queries, k, v, **given)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        queries, k, v, attn_mask=given.get("mask"), is_causal=given.get("is_causal", False)
    )
    assert written.shape == sdpa.shape and torch.allclose(written, sdpa, atol=1e-6)
    upstream = torch.randn(written.shape, generator=generator)
    grads = [torch.autograd.grad(out, (q, k, v), upstream) for out in (written, sdpa)]
    for mine, theirs in zip(*grads, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = attend(queries, k, v, **given)
    assert rounded.dtype == torch.bfloat16 and (rounded.float() - sdpa).abs().max() < 0.05


def test_frame_causal_mask_matches_token_causal_attention_for_one_token_per_frame():
    torch.manual_seed(3)
    block = Block(dim=32, heads=4, mlp_dim=64).eval()
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(block(x, mask=frame_causal_mask(6, 1)), block(x, is_causal=True))
    mask = frame_causal_mask(frames=3, tokens_per_frame=2)
    assert mask.shape == (6, 6)
    assert mask[0, 1] and mask[1, 0] and not mask[1, 2] and mask[5, 0]  # same frame: both ways; future: never


def test_loss_returns_its_terms_and_trains_encoder_and_predictor():
    torch.manual_seed(4)
    model = build("tiny", image_size=64, action_dim=ACTION_DIM, history=HISTORY)
    terms = model.loss(random_batch(4, 4))
    assert set(terms) == {"loss", "pred_loss", "sigreg"}
    expected = terms["pred_loss"] + model.config.sigreg_weight * terms["sigreg"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()

    def has_gradient(part: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())

    for part in (model.encoder, model.projector, model.predictor, model.predictor_projector):
        assert has_gradient(part), part
    # AdaLN-zero: the zero-initialised modulation blocks the action encoder's gradient until it has moved
    assert not has_gradient(model.action_encoder)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    model.loss(random_batch(4, 4))["loss"].backward()
    assert has_gradient(model.action_encoder)


def test_loss_never_gives_the_predictor_more_context_than_history():
    """A 4-frame window with history 1 is scored as its three 2-frame windows."""
    torch.manual_seed(5)
    model = build("tiny", image_size=64, action_dim=ACTION_DIM, history=1, sigreg_weight=0.0).eval()
    for block in model.predictor.blocks:  # make attention across frames matter
        torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
    batch = random_batch(2, 4)
    with torch.no_grad():
        whole = model.loss(batch)["pred_loss"]
        pairs = [
            model.loss({name: tensor[:, start : start + 2] for name, tensor in batch.items()})["pred_loss"]
            for start in range(3)
        ]
    torch.testing.assert_close(whole, torch.stack(pairs).mean())


def test_rollout_imagines_one_latent_per_planned_action_block(tiny):
    tiny.eval()
    latent_dim = SIZES["tiny"].latent_dim
    with torch.no_grad():
        z_hist = torch.randn(5, tiny.history, 1, latent_dim)
        plan = torch.rand(5, 4, ACTION_DIM) * 2 - 1
        assert tiny.rollout(z_hist, plan).shape == (5, 4, 1, latent_dim)
        past = torch.rand(5, tiny.history - 1, ACTION_DIM)
        assert tiny.rollout(z_hist, plan, past).shape == (5, 4, 1, latent_dim)


def test_build_names_unknown_options_and_sizes():
    with pytest.raises(
        ValueError, match="lewm override 'predictor_layers' is not a config field; fields: .*predictor_depth"
    ):
        build("tiny", image_size=64, action_dim=ACTION_DIM, history=HISTORY, predictor_layers=3)
    with pytest.raises(ValueError, match="lewm size 'huge' is unknown; known sizes: tiny, paper"):
        build("huge", image_size=64, action_dim=ACTION_DIM, history=HISTORY)


def test_encode_names_the_image_size_it_was_built_for(tiny):
    with pytest.raises(ValueError, match="built for 64×64"):
        tiny.encode(torch.rand(1, 1, 3, 32, 32))
