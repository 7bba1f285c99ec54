"""The WorldModel contract: the only view of a model that training and planning get.

Shapes: B batch, T time, N tokens per frame, D latent width, A action width
(one action *block*: frameskip × the env's action_dim, flattened).

A batch from the dataset is a dict of tensors:
    pixels  (B, T, 3, H, W) float32 in [0, 1]
    actions (B, T, A)       float32 in [-1, 1]; actions[:, t] moves frame t to t+1
    states  (B, T, S)       float32 ground truth (probes only; models must not train on it
                            unless their config says it uses proprioception)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class RolloutStart:
    """What every imagined future of one plan starts from, made once per replanning call.

    A planner scores S candidate plans per episode at each of its iterations, all from the same
    history: :meth:`WorldModel.start_rollout` makes this once per plan (the history's latents,
    the executed action blocks and, for a model that embeds them, their embeddings) and
    :meth:`WorldModel.rollout_from` reads it at every iteration, so nothing that is fixed within
    the plan is computed again.
    """

    latents: Tensor  # (B, h, N, D): the history frames' latents, oldest first
    past_actions: Tensor  # (B, h-1, A): the action blocks executed between those frames
    # (B, h-1, ...): those blocks as the model's predictor takes them in; LeWM: action embeddings (B, h-1, W),
    # DINO-WM: the input tokens of frames 0..h-2 with their blocks (B, h-1, N, W)
    past_embeddings: Tensor | None = None

    def rows(self, index: Tensor | slice) -> RolloutStart:
        """The starts of batch rows ``index``, e.g. each candidate's episode (a LongTensor) or a chunk (a slice)."""
        embeddings = None if self.past_embeddings is None else self.past_embeddings[index]
        return RolloutStart(self.latents[index], self.past_actions[index], embeddings)


class WorldModel(nn.Module, ABC):
    """An action-conditioned latent world model.

    Besides the methods below, every model sets two attributes in its ``__init__``:
    ``config``, the resolved config dataclass (size preset + overrides) that keys the
    checkpoint cache, and ``history``, the frames of context its predictor conditions on
    (the protocol's history, or 1 for a model whose state summarises the past).
    ``check_world_model`` holds a built model to this.
    """

    config: Any  # a dataclass instance
    history: int

    @abstractmethod
    def encode(self, pixels: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [0, 1] -> latents (B, T, N, D)."""

    @abstractmethod
    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """Teacher-forced one-step prediction.

        z_hist (B, T, N, D) and actions (B, T, A) -> (B, T, N, D), where output t
        predicts the latent of frame t+1 from frames <= t (causal).
        """

    @abstractmethod
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training loss: ``{"loss": total, <term>: value, ...}`` (scalars)."""

    @property
    @abstractmethod
    def tokens_per_frame(self) -> int:
        """N: latent tokens per frame (1 for LeWM, patches for DINO-WM)."""

    @property
    def pretrained(self) -> bool:
        """Whether the builder loaded every weight from elsewhere (a stable-worldmodel checkpoint, models/lewm/swm.py):
        a trial then evaluates the model as built and never trains it. Default False."""
        return False

    @property
    def num_params(self) -> int:
        """Total parameters, frozen ones included."""
        return sum(p.numel() for p in self.parameters())

    def rollout(self, z_hist: Tensor, plan: Tensor, past_actions: Tensor | None = None) -> Tensor:
        """Imagine H steps ahead from the last ``history`` frames.

        z_hist (B, h, N, D); past_actions (B, h-1, A) between those frames (zeros if
        None); plan (B, H, A) -> predicted latents (B, H, N, D) of frames t+1..t+H.
        Each step runs the predictor over a window of at most ``history`` frames. This is the
        plain path: a model that caches within a plan (:meth:`rollout_from`) must imagine the same.
        """
        batch, h = z_hist.shape[:2]
        if past_actions is None:
            past_actions = plan.new_zeros(batch, h - 1, plan.shape[-1])
        latents = z_hist
        actions = torch.cat([past_actions, plan[:, :1]], dim=1)  # (B, h, A)
        predicted = []
        for step in range(plan.shape[1]):
            window = slice(-self.history, None)
            z_next = self.predict(latents[:, window], actions[:, window])[:, -1:]  # (B, 1, N, D)
            predicted.append(z_next)
            latents = torch.cat([latents, z_next], dim=1)
            if step + 1 < plan.shape[1]:
                actions = torch.cat([actions, plan[:, step + 1 : step + 2]], dim=1)
        return torch.cat(predicted, dim=1)

    def start_rollout(self, z_hist: Tensor, past_actions: Tensor) -> RolloutStart:
        """What every rollout of one plan shares, made once per plan: z_hist (B, h, N, D), past_actions (B, h-1, A).

        The default holds the two as given; a model with more to compute once (LeWM and PLDM's
        ViT: the past actions' embeddings; DINO-WM: the past frames' input tokens) overrides it
        together with :meth:`rollout_from`.
        """
        return RolloutStart(z_hist, past_actions)

    def rollout_from(self, start: RolloutStart, plan: Tensor) -> Tensor:
        """Imagine H steps ahead from ``start``: plan (B, H, A) -> (B, H, N, D), as :meth:`rollout` does."""
        return self.rollout(start.latents, plan, start.past_actions)

    def prepare(self, dataset: torch.utils.data.Dataset) -> None:
        """One-off setup from the training data before the training loop (default: none).

        DINO-WM-style models without local pretrained weights pretrain their frozen
        encoder here; the training loop calls it once, before the first step.
        """

    def describe(self) -> dict[str, str]:
        """Free-form facts recorded in the result row (e.g. which encoder weights)."""
        return {}

    def entry_name(self, registered: str) -> str:
        """The name this model's rows carry on the leaderboard, given its registry name (default: that name).

        A model that stands in for the published method in some configuration says so here,
        so its row is never ranked under the published method's name (e.g. "dino_wm[mae]").
        """
        return registered


def check_world_model(model: WorldModel, name: str) -> WorldModel:
    """``model`` itself once its ``config`` is a dataclass and its ``history`` a positive int; TypeError otherwise."""
    config, history = getattr(model, "config", None), getattr(model, "history", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"model {name!r}: config must be its resolved config dataclass, got {config!r}")
    if not isinstance(history, int) or history < 1:
        raise TypeError(f"model {name!r}: history must be a positive int (frames of context), got {history!r}")
    return model
