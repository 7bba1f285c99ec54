"""The WorldModel contract as a report: what a sweep needs of a model, checked on random tensors.

``python -m harness check-model NAME`` prints it for any model a sweep could name (a zoo entry,
an import path ``package.module:build`` or an installed entry point), so a model from outside
the repository is checked before a sweep is spent on it. tests/test_model_contract.py holds
every zoo entry to the same contract in finer detail.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from models.registry import build_model, model_sizes


@dataclass(frozen=True)
class Check:
    """One clause of the contract and whether the model keeps it."""

    clause: str
    ok: bool
    detail: str = ""


def check_contract(
    name: str, size: str = "tiny", image_size: int = 32, action_dim: int = 4, history: int = 2, batch: int = 2
) -> list[Check]:
    """Build ``name`` at ``size`` and check each clause in turn; stops at the first clause that cannot go on."""
    checks: list[Check] = []

    def clause(text: str, ok: bool, detail: str = "") -> bool:
        checks.append(Check(text, bool(ok), detail))
        return bool(ok)

    try:
        sizes = model_sizes(name)
    except ValueError as error:
        clause("the module lists its sizes (SIZES) and has the builder", False, str(error))
        return checks
    if not clause(f"size {size!r} is a preset", size in sizes, f"sizes: {', '.join(sizes)}"):
        return checks
    torch.manual_seed(0)
    frames, horizon = history + 2, 3
    windows = [
        {
            "pixels": torch.rand(frames, 3, image_size, image_size),  # (T, 3, H, W) in [0, 1]
            "actions": torch.rand(frames, action_dim) * 2 - 1,  # (T, A) standardised action blocks
            "states": torch.rand(frames, 2),
        }
        for _ in range(2 * batch)
    ]
    try:
        model = build_model(name, size, image_size, action_dim, history=history)
        model.prepare(windows)
    except Exception as error:  # the report names whatever the user's builder raised
        clause("builds with (size, image_size, action_dim, *, history) and prepares", False, repr(error))
        return checks
    clause("builds with (size, image_size, action_dim, *, history) and prepares", True)
    config_ok = dataclasses.is_dataclass(model.config) and not isinstance(model.config, type)
    clause("config is its resolved config dataclass", config_ok, type(model.config).__name__)
    clause("history is the frames it was given, or 1", model.history in (history, 1), f"history {model.history}")
    stacked = {key: torch.stack([window[key] for window in windows[:batch]]) for key in windows[0]}
    model.eval()
    try:
        with torch.no_grad():
            z = model.encode(stacked["pixels"])  # (B, T, N, D)
            shape_ok = z.ndim == 4 and tuple(z.shape[:3]) == (batch, frames, model.tokens_per_frame)
            clause("encode(pixels[B,T,3,H,W]) -> z[B,T,N,D], N = tokens_per_frame", shape_ok, str(tuple(z.shape)))
            predicted = model.predict(z, stacked["actions"])
            clause("predict(z, actions) keeps z's shape", predicted.shape == z.shape, str(tuple(predicted.shape)))
            plan = torch.rand(batch, horizon, action_dim) * 2 - 1
            past = torch.rand(batch, model.history - 1, action_dim) * 2 - 1
            imagined = model.rollout(z[:, : model.history], plan, past)  # (B, H, N, D)
            rollout_ok = imagined.shape == (batch, horizon, *z.shape[2:]) and bool(torch.isfinite(imagined).all())
            clause("rollout(z_hist, plan, past) -> finite z[B,H,N,D]", rollout_ok, str(tuple(imagined.shape)))
    except Exception as error:
        clause("encode, predict and rollout run on the planner's shapes", False, repr(error))
        return checks
    model.train()
    try:
        terms = model.loss(stacked)
        loss = terms["loss"]
        finite = loss.ndim == 0 and math.isfinite(loss.item())
        clause("loss(batch) -> {'loss': finite scalar, ...}", finite, f"{loss.item():.4g}" if loss.ndim == 0 else "")
        loss.backward()
        reaches = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        clause("the loss reaches the parameters", reaches)
    except Exception as error:
        clause("loss(batch) runs and backpropagates", False, repr(error))
    return checks
