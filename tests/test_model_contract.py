"""Every entry of the zoo keeps the WorldModel contract: tiny size, 32 px, CPU, random tensors.

Parametrised over ``models.registry.MODELS``, so a new entry is held to the contract without
editing this file: its builder takes ``history`` as a required keyword, the model declares its
config dataclass and history, and encode, predict, rollout and loss have the planner's and the
training loop's shapes.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math

import pytest
import torch

from models.registry import MODELS, build_model, model_sizes
from models.world_model import WorldModel

IMAGE_SIZE = 32
ACTION_DIM = 4
HISTORY = 2  # not any entry's preset default, so a builder that drops it is caught
BATCH, FRAMES, HORIZON = 2, 4, 3

pytestmark = pytest.mark.usefixtures("one_thread")


def random_windows(count: int, frames: int = FRAMES) -> list[dict[str, torch.Tensor]]:
    """Windows in the dataset's layout: pixels (T, 3, H, W) in [0, 1], actions (T, A) in [-1, 1], states (T, 2)."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "pixels": torch.rand(frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
            "actions": torch.rand(frames, ACTION_DIM, generator=g) * 2 - 1,
            "states": torch.rand(frames, 2, generator=g),
        }
        for _ in range(count)
    ]


def as_batch(windows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([window[key] for window in windows]) for key in windows[0]}


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request) -> tuple[str, WorldModel]:
    """Each zoo entry at its tiny size, prepared on random windows (DINO-WM pretrains its encoder there)."""
    torch.manual_seed(0)
    model = build_model(request.param, "tiny", IMAGE_SIZE, ACTION_DIM, history=HISTORY)
    model.prepare(random_windows(8))
    return request.param, model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builder_takes_size_image_action_and_a_required_history(name):
    module_name, attr = MODELS[name].split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module_name), attr)).parameters
    assert list(parameters)[:3] == ["size", "image_size", "action_dim"]
    history = parameters["history"]
    assert history.kind is inspect.Parameter.KEYWORD_ONLY and history.default is inspect.Parameter.empty
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    with pytest.raises(TypeError, match="history"):
        build_model(name, "tiny", IMAGE_SIZE, ACTION_DIM)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sizes_are_listed_before_anything_is_built_and_unknown_ones_named(name):
    sizes = model_sizes(name)
    assert "tiny" in sizes and all(isinstance(size, str) for size in sizes)
    with pytest.raises(ValueError, match="'huge' is unknown; known sizes: " + ", ".join(sizes)):
        build_model(name, "huge", IMAGE_SIZE, ACTION_DIM, history=HISTORY)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_unknown_override_raises_naming_it(name):
    with pytest.raises(ValueError, match="'no_such_field' is not a config field"):
        build_model(name, "tiny", IMAGE_SIZE, ACTION_DIM, history=HISTORY, no_such_field=1)


def test_model_declares_its_config_dataclass_and_the_history_it_was_given(built):
    name, model = built
    assert dataclasses.is_dataclass(model.config) and not isinstance(model.config, type)
    assert model.num_params == sum(p.numel() for p in model.parameters()) > 0
    if model.history != HISTORY:
        # Only a model whose latent summarises the past may ignore the protocol's history:
        # it then plans from one frame, and its prediction from a frame never reads earlier frames.
        assert model.history == 1, f"{name}: history {model.history}, built with {HISTORY}"
        model.eval()
        z = model.encode(as_batch(random_windows(BATCH))["pixels"])
        actions = torch.rand(BATCH, FRAMES, ACTION_DIM) * 2 - 1
        changed = z.clone()
        changed[:, :-1] += 1.0
        with torch.no_grad():
            torch.testing.assert_close(model.predict(z, actions)[:, -1], model.predict(changed, actions)[:, -1])


def test_row_name_is_the_registry_name_or_says_what_stands_in_for_it(built):
    name, model = built
    row_name = model.entry_name(name)
    assert row_name == name or (row_name.startswith(f"{name}[") and row_name.endswith("]")), row_name


def test_encode_predict_and_rollout_have_the_planners_shapes(built):
    name, model = built
    model.eval()
    pixels = as_batch(random_windows(BATCH))["pixels"]  # (B, T, 3, H, W)
    with torch.no_grad():
        z = model.encode(pixels)
        assert z.ndim == 4 and z.shape[:3] == (BATCH, FRAMES, model.tokens_per_frame), name
        actions = torch.rand(BATCH, FRAMES, ACTION_DIM) * 2 - 1
        assert model.predict(z, actions).shape == z.shape
        z_hist = z[:, : model.history]  # (B, h, N, D)
        past = torch.rand(BATCH, model.history - 1, ACTION_DIM) * 2 - 1
        plan = torch.rand(BATCH, HORIZON, ACTION_DIM) * 2 - 1
        imagined = model.rollout(z_hist, plan, past)
    assert imagined.shape == (BATCH, HORIZON, *z.shape[2:])
    assert torch.isfinite(imagined).all()


def test_a_rollout_from_its_plan_start_imagines_what_rollout_does(built):
    """The planner makes a RolloutStart once per plan and calls rollout_from every iteration: the same futures."""
    name, model = built
    model.eval()
    with torch.no_grad():
        z_hist = model.encode(as_batch(random_windows(BATCH))["pixels"])[:, : model.history]  # (B, h, N, D)
        past = torch.rand(BATCH, model.history - 1, ACTION_DIM) * 2 - 1
        plan = torch.rand(BATCH, HORIZON, ACTION_DIM) * 2 - 1
        started = model.rollout_from(model.start_rollout(z_hist, past), plan)
        torch.testing.assert_close(started, model.rollout(z_hist, plan, past), rtol=1e-5, atol=1e-6, msg=name)


def test_loss_is_a_finite_scalar_that_reaches_the_parameters(built):
    name, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    terms = model.loss(as_batch(random_windows(BATCH)))
    loss = terms["loss"]
    assert loss.ndim == 0 and math.isfinite(loss.item()), name
    assert all(value.ndim == 0 for value in terms.values())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name
    model.zero_grad(set_to_none=True)
