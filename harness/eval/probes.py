"""Linear probes: how much of the true state a frozen model's latents hold, read out linearly.

LeWM's paper probes agent and block positions linearly from the latent (REFERENCE.md,
"Probes"). Here a ridge regression maps the frozen latents of one frame to its
ground-truth state; its penalty is chosen by cross-validation over contiguous folds of
the training frames, and R² (with Pearson r beside it) is measured on held-out frames, which the caller
should draw from held-out episodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from models.world_model import WorldModel

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # ridge penalties tried, relative to the sample count
FOLDS = 5  # contiguous cross-validation folds for choosing alpha


@torch.no_grad()
def frozen_features(
    model: WorldModel,
    data: torch.utils.data.Dataset | Iterable[dict[str, Tensor]],
    device: torch.device | str,
    batch_size: int = 64,
    max_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Latents and states of every frame: features (F, N·D) and states (F, S), with the model in eval mode.

    ``data`` is a Dataset of windows (pixels (T, 3, H, W), states (T, S)) or an iterable of
    such batches with a leading batch dim. With ``max_frames``, a Dataset is read at evenly
    spaced windows, so that every episode is represented; an iterable is read from its start.
    """
    if isinstance(data, torch.utils.data.Dataset):
        if max_frames is not None:
            windows = max(1, max_frames // len(data[0]["pixels"]))
            if windows < len(data):
                data = torch.utils.data.Subset(data, np.linspace(0, len(data) - 1, windows).astype(int).tolist())
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    features, states, frames = [], [], 0
    for batch in data:
        z = model.encode(batch["pixels"].to(device)).float()  # (B, T, N, D)
        features.append(rearrange(z, "b t n d -> (b t) (n d)").cpu().numpy())
        states.append(rearrange(batch["states"], "b t s -> (b t) s").float().numpy())
        frames += len(features[-1])
        if max_frames is not None and frames >= max_frames:
            break
    model.train(was_training)
    features_array, states_array = np.concatenate(features), np.concatenate(states)
    if max_frames is not None:
        features_array, states_array = features_array[:max_frames], states_array[:max_frames]
    return features_array.astype(np.float64), states_array.astype(np.float64)


class Ridge:
    """Ridge regression on standardised features, closed form (dual form when features outnumber samples)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> Ridge:
        """x (n, p), y (n, s)."""
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        self.y_mean = y.mean(0)
        xs, yc = (x - self.x_mean) / self.x_std, y - self.y_mean
        n, p = xs.shape
        penalty = self.alpha * n
        if p <= n:
            self.weights = np.linalg.solve(xs.T @ xs + penalty * np.eye(p), xs.T @ yc)  # (p, s)
        else:
            self.weights = xs.T @ np.linalg.solve(xs @ xs.T + penalty * np.eye(n), yc)  # (p, s)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, p) -> (n, s)."""
        return ((x - self.x_mean) / self.x_std) @ self.weights + self.y_mean


def r2_per_dim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, against the held-out mean."""
    residual = ((y_true - y_pred) ** 2).sum(0)
    total = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return 1.0 - residual / np.maximum(total, 1e-12)


def pearson_per_dim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per column (the paper's probe figure)."""
    a, b = y_true - y_true.mean(0), y_pred - y_pred.mean(0)
    return (a * b).sum(0) / np.maximum(np.sqrt((a**2).sum(0) * (b**2).sum(0)), 1e-12)


def by_quantity(
    r2: np.ndarray,
    pearson_r: np.ndarray,
    quantities: Mapping[str, Sequence[int]] | None,
    state_dims: Sequence[int],
) -> dict[str, dict[str, float]]:
    """Mean R² and Pearson r over each named quantity's dims, as the paper reports one figure per quantity.

    ``r2`` and ``pearson_r`` are per probed column; ``state_dims`` the state dim of each column.
    Quantities name dims of the state; None or empty: one quantity, ``"state"``, of every probed dim.
    """
    column = {dim: index for index, dim in enumerate(state_dims)}
    if not quantities:
        quantities = {"state": tuple(state_dims)}
    scores = {}
    for name, dims in quantities.items():
        missing = [dim for dim in dims if dim not in column]
        if not dims or missing:
            raise ValueError(f"quantity {name!r} needs probed state dims, but {missing or 'none'} are not probed")
        columns = [column[dim] for dim in dims]
        scores[name] = {"r2": float(r2[columns].mean()), "pearson_r": float(pearson_r[columns].mean())}
    return scores


def fit_probe(
    train_x: np.ndarray, train_y: np.ndarray, alphas: Sequence[float] = ALPHAS, folds: int = FOLDS
) -> tuple[Ridge, float, dict[float, float]]:
    """A ridge probe whose alpha maximises mean R² over contiguous cross-validation folds, refit on all rows.

    Folds are contiguous so that frames of one episode rarely sit on both sides of a fold.
    """
    if len(train_x) < 2 * folds:
        raise ValueError(f"a probe needs at least {2 * folds} training frames for {folds}-fold validation")
    bounds = np.linspace(0, len(train_x), folds + 1).astype(int)
    scores = {}
    for alpha in alphas:
        fold_scores = []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            held = np.zeros(len(train_x), dtype=bool)
            held[start:stop] = True
            ridge = Ridge(alpha).fit(train_x[~held], train_y[~held])
            fold_scores.append(r2_per_dim(train_y[held], ridge.predict(train_x[held])).mean())
        scores[alpha] = float(np.mean(fold_scores))
    best = max(scores, key=scores.get)
    return Ridge(best).fit(train_x, train_y), best, scores


def linear_probe(
    model: WorldModel,
    train_data: torch.utils.data.Dataset | Iterable[dict[str, Tensor]],
    test_data: torch.utils.data.Dataset | Iterable[dict[str, Tensor]],
    device: torch.device | str,
    state_dims: Sequence[int] | None = None,
    max_frames: int | None = 20_000,
    quantities: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Linear-probe R² from the frozen latents to the true state, fitted on ``train_data``, scored on ``test_data``.

    Pass windows of held-out episodes as ``test_data``; ``max_frames`` caps the frames read
    from each, at evenly spaced windows.

    Returns ``r2`` (mean over state dims), ``r2_per_dim``, ``pearson_r`` per dim, ``mse``
    (on the state's own scale), the chosen ``alpha``, the frame counts, and ``quantities``:
    name -> {"r2", "pearson_r"}, each the mean over that quantity's dims (the task's
    ``Task.quantities``; dims of the full state) from the same one fit (see :func:`by_quantity`).
    """
    train_x, train_y = frozen_features(model, train_data, device, max_frames=max_frames)
    test_x, test_y = frozen_features(model, test_data, device, max_frames=max_frames)
    probed = list(range(train_y.shape[1])) if state_dims is None else list(state_dims)
    train_y, test_y = train_y[:, probed], test_y[:, probed]
    ridge, alpha, _ = fit_probe(train_x, train_y)
    predicted = ridge.predict(test_x)
    r2, pearson_r = r2_per_dim(test_y, predicted), pearson_per_dim(test_y, predicted)
    return {
        "r2": float(r2.mean()),
        "r2_per_dim": r2.tolist(),
        "pearson_r": pearson_r.tolist(),
        "quantities": by_quantity(r2, pearson_r, quantities, probed),
        "mse": float(((test_y - predicted) ** 2).mean()),
        "alpha": alpha,
        "train_frames": len(train_x),
        "test_frames": len(test_x),
    }
