"""PLDM: a latent dynamics model trained from scratch with VICReg-style anti-collapse terms.

Sobal et al., arXiv 2502.14819 (REFERENCE.md "Baselines"). An encoder and a predictor are
trained jointly; collapse is held off by six weighted regularisers instead of LeWM's one:

    L = L_pred + α·L_var + β·L_cov + γ·L_time-sim + ζ·L_time-var + ν·L_time-cov + μ·L_IDM

L_pred is the squared error of the predictor unrolled open-loop from the first frame of the
window (ẑ_0 = z_0, ẑ_{t+1} = f(ẑ_t, a_t)), as in PLDM; ``teacher_forcing`` predicts each step
from the encoded frame instead. L_var and L_cov are VICReg's variance hinge and off-diagonal
covariance of the encoder's latents across the batch (at each time step); the "time-" versions
take the same statistics across the frames of each window; L_time-sim is the squared distance
between consecutive latents; L_IDM is the error of an inverse-dynamics head predicting a_t from
(z_t, z_{t+1}). The published Push-T weights are the defaults; every weight is a config field.

Encoder: the Dreamer baseline's stride-2 conv stack (models/blocks/conv.py), flattened and
projected to one latent token per frame (N = 1; PLDM's own Two-Room encoder keeps a small
spatial map — one vector keeps the latent comparable with LeWM's). Predictor: a residual MLP
on (z_t, a_t); it is Markov, so planning needs one frame of history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.blocks.conv import ConvEncoder
from models.presets import resolve_config
from models.world_model import WorldModel


@dataclass(frozen=True)
class PLDMConfig:
    """Sizes and the six regulariser weights; weights default to PLDM's Push-T grid search."""

    image_size: int = 64
    action_dim: int = 2
    cnn_depth: int = 32  # channels of the first conv stage, doubled per stage (sizes are wmbench's)
    cnn_stages: int | None = None  # None: halve down to a 4–7 pixel map
    latent_dim: int = 256
    predictor_hidden: int = 1024
    predictor_layers: int = 3  # hidden layers of the predictor MLP
    alpha_var: float = 18.0  # α, batch variance (PLDM Push-T, 256-config grid)
    beta_cov: float = 12.0  # β, batch covariance (PLDM Push-T)
    gamma_time_sim: float = 0.2  # γ, consecutive-latent similarity (PLDM Push-T)
    zeta_time_var: float = 0.7  # ζ, variance across time (PLDM Push-T)
    nu_time_cov: float = 0.0  # ν, covariance across time (PLDM Push-T)
    mu_idm: float = 0.0  # μ, inverse dynamics (PLDM Push-T); the head is built only when μ > 0
    std_target: float = 1.0  # the variance hinge's target standard deviation (VICReg)
    std_eps: float = 1e-4  # inside the square root of the variance (VICReg)
    teacher_forcing: bool = False  # PLDM unrolls the predictor open-loop during training
    history: int = 1  # the predictor is Markov: the current latent is all it reads, whatever the protocol's history


SIZES: dict[str, PLDMConfig] = {
    "tiny": PLDMConfig(cnn_depth=8, latent_dim=64, predictor_hidden=128, predictor_layers=2),
    "paper": PLDMConfig(),
}


def variance_hinge(z: Tensor, target: float, eps: float) -> Tensor:
    """VICReg variance term over dim -2: mean over (..., D) of relu(target − std). z (..., B, D) -> scalar."""
    std = (z.var(dim=-2) + eps).sqrt()
    return F.relu(target - std).mean()


def covariance_penalty(z: Tensor) -> Tensor:
    """VICReg covariance term over dim -2: squared off-diagonal covariances / D, averaged over (...)."""
    centred = z - z.mean(dim=-2, keepdim=True)
    cov = centred.transpose(-2, -1) @ centred / (z.shape[-2] - 1)  # (..., D, D)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    return off_diagonal.square().sum(dim=(-2, -1)).mean() / z.shape[-1]


class PLDM(WorldModel):
    """Conv encoder + residual MLP predictor, one latent token per frame."""

    def __init__(self, config: PLDMConfig) -> None:
        super().__init__()
        self.config = config
        self.history = config.history
        c = config
        conv = ConvEncoder(c.image_size, c.cnn_depth, c.cnn_stages)
        self.stages = len(conv.widths)
        self.encoder = nn.Sequential(conv, nn.Linear(conv.embed_dim, c.latent_dim))
        layers, width = [], c.latent_dim + c.action_dim
        for _ in range(c.predictor_layers):
            layers += [nn.Linear(width, c.predictor_hidden), nn.LayerNorm(c.predictor_hidden), nn.GELU()]
            width = c.predictor_hidden
        layers.append(nn.Linear(width, c.latent_dim))
        self.predictor = nn.Sequential(*layers)
        self.idm = None  # inverse dynamics (z_t, z_{t+1}) -> a_t, only when its weight μ is used
        if c.mu_idm > 0:
            hidden = c.predictor_hidden
            self.idm = nn.Sequential(nn.Linear(2 * c.latent_dim, hidden), nn.GELU(), nn.Linear(hidden, c.action_dim))

    @property
    def tokens_per_frame(self) -> int:
        return 1

    def describe(self) -> dict[str, str]:
        c = self.config
        weights = f"{c.alpha_var},{c.beta_cov},{c.gamma_time_sim},{c.zeta_time_var},{c.nu_time_cov},{c.mu_idm}"
        return {"encoder": f"conv {self.stages}×{c.cnn_depth}, trained from scratch", "pldm_weights": weights}

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, T, 1, D)."""
        batch = pixels.shape[0]
        z = self.encoder(rearrange(pixels, "b t c h w -> (b t) c h w"))
        return rearrange(z, "(b t) d -> b t 1 d", b=batch)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        """ẑ_{t+1} = z_t + f(z_t, a_t); z (..., D), action (..., A)."""
        return z + self.predictor(torch.cat([z, action], dim=-1))

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """One step from every frame: (B, T, 1, D), (B, T, A) -> (B, T, 1, D)."""
        return self._step(z_hist, actions.unsqueeze(2))

    def rollout(self, z_hist: Tensor, plan: Tensor, past_actions: Tensor | None = None) -> Tensor:
        """Unroll the Markov predictor from the last frame: (B, h, 1, D), (B, H, A) -> (B, H, 1, D)."""
        z = z_hist[:, -1, 0]
        imagined = []
        for step in range(plan.shape[1]):
            z = self._step(z, plan[:, step])
            imagined.append(z)
        return rearrange(torch.stack(imagined, dim=1), "b t d -> b t 1 d")

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The seven-term PLDM objective on one window of frames."""
        c = self.config
        actions = batch["actions"]
        z = self.encode(batch["pixels"])  # (B, T, 1, D)
        if c.teacher_forcing:
            predicted = self.predict(z[:, :-1], actions[:, :-1])
        else:
            predicted = self.rollout(z[:, :1], actions[:, :-1])  # open-loop from frame 0
        terms = {"pred": F.mse_loss(predicted.float(), z[:, 1:].float())}
        flat = rearrange(z, "b t 1 d -> b t d").float()
        across_batch = rearrange(flat, "b t d -> t b d")
        with torch.autocast(flat.device.type, enabled=False):  # the statistics in full precision under bf16
            terms["var"] = variance_hinge(across_batch, c.std_target, c.std_eps)
            terms["cov"] = covariance_penalty(across_batch)
            terms["time_sim"] = (flat[:, 1:] - flat[:, :-1]).square().mean()
            terms["time_var"] = variance_hinge(flat, c.std_target, c.std_eps)
            terms["time_cov"] = covariance_penalty(flat)
        weights = {
            "var": c.alpha_var,
            "cov": c.beta_cov,
            "time_sim": c.gamma_time_sim,
            "time_var": c.zeta_time_var,
            "time_cov": c.nu_time_cov,
        }
        if self.idm is not None:
            inferred = self.idm(torch.cat([flat[:, :-1], flat[:, 1:]], dim=-1))  # (B, T-1, A)
            terms["idm"] = F.mse_loss(inferred, actions[:, :-1])
            weights["idm"] = c.mu_idm
        total = terms["pred"] + sum(weight * terms[name] for name, weight in weights.items())
        return {"loss": total, **{name: value.detach() for name, value in terms.items()}}


def build(size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any) -> PLDM:
    """The zoo builder: a preset ("tiny" or "paper") at the task's image size and action width.

    ``history`` is not used: the model plans from its current state, which summarises the past.
    """
    config = resolve_config("pldm", SIZES, size, image_size=image_size, action_dim=action_dim, **overrides)
    return PLDM(config)
