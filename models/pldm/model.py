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

Two architectures (``architecture``), one loss:

* "vit" (sizes ``vit_tiny``, ``vit_paper``): the PLDM of LeWM's comparison (REFERENCE.md, "The
  authors' evaluation code") — LeWM's ViT encoder read at its CLS token through a BatchNorm
  projector, and LeWM's causal transformer predictor with AdaLN-zero actions (models/blocks),
  over the protocol's history (3 on Push-T), teacher-forced on windows of history + 1 frames.
* "conv" (sizes ``tiny``, ``paper``; wmbench's small PLDM): the Dreamer baseline's stride-2
  conv stack (models/blocks/conv.py), flattened and projected to one latent token per frame
  (N = 1; PLDM's own Two-Room encoder keeps a small spatial map — one vector keeps the latent
  comparable with LeWM's), and a residual MLP on (z_t, a_t); it is Markov, so planning needs
  one frame of history.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.blocks.conv import ConvEncoder
from models.blocks.imagenet import ImageNetNormalise
from models.blocks.predictor import CPU_TINY_SIZES, ActionEncoder, CausalPredictor, Projector
from models.blocks.vit import ViTEncoder
from models.presets import resolve_config
from models.world_model import RolloutStart, WorldModel


@dataclass(frozen=True)
class PLDMConfig:
    """Sizes and the six regulariser weights; weights default to PLDM's Push-T grid search."""

    image_size: int = 64
    action_dim: int = 2
    architecture: str = "conv"  # "vit": LeWM's encoder and predictor, as in LeWM's comparison; "conv": wmbench's
    # "conv" only: sizes are wmbench's.
    cnn_depth: int = 32  # channels of the first conv stage, doubled per stage (sizes are wmbench's)
    cnn_stages: int | None = None  # None: halve down to a 4–7 pixel map
    latent_dim: int = 256
    predictor_hidden: int = 1024
    predictor_layers: int = 3  # hidden layers of the predictor MLP
    # "vit" only: LeWM's published sizes (REFERENCE.md, LeWM "Method"), as the authors' PLDM uses them.
    patch_size: int = 14  # ViT-Tiny
    encoder_width: int = 192  # ViT-Tiny
    encoder_depth: int = 12  # ViT-Tiny
    encoder_heads: int = 3  # ViT-Tiny
    encoder_mlp_dim: int = 768  # ViT-Tiny's MLP ratio 4
    encoder_pos_init: str = "random"  # "sincos" as LeWM's tiny preset (ours)
    projector_hidden: int = 2048  # LeWM's BatchNorm projectors 192→2048→192
    predictor_depth: int = 6  # LeWM: 6 layers
    predictor_heads: int = 16  # LeWM: 16 heads × 64
    predictor_dim_head: int = 64
    predictor_width: int = 192
    predictor_mlp_dim: int = 2048
    predictor_dropout: float = 0.1  # in attention and MLP; none on the input embeddings (the authors' library)
    max_frames: int = 16  # learned frame positions for windows up to this long (ours)
    action_conv_dim: int = 10  # LeWM's action encoder (ours)
    action_mlp_ratio: int = 4  # LeWM's action encoder (ours)
    alpha_var: float = 18.0  # α, batch variance (PLDM Push-T, 256-config grid)
    beta_cov: float = 12.0  # β, batch covariance (PLDM Push-T)
    gamma_time_sim: float = 0.2  # γ, consecutive-latent similarity (PLDM Push-T)
    zeta_time_var: float = 0.7  # ζ, variance across time (PLDM Push-T)
    nu_time_cov: float = 0.0  # ν, covariance across time (PLDM Push-T)
    mu_idm: float = 0.0  # μ, inverse dynamics (PLDM Push-T); the head is built only when μ > 0
    std_target: float = 1.0  # the variance hinge's target standard deviation (VICReg)
    std_eps: float = 1e-4  # inside the square root of the variance (VICReg)
    teacher_forcing: bool = False  # PLDM unrolls open-loop; LeWM's comparison teacher-forces ("vit" requires it)
    history: int = 1  # "conv" is Markov: the current latent is all it reads; "vit": build() sets the protocol's


_VIT = PLDMConfig(architecture="vit", image_size=224, latent_dim=192, teacher_forcing=True, history=3)

SIZES: dict[str, PLDMConfig] = {
    "tiny": PLDMConfig(cnn_depth=8, latent_dim=64, predictor_hidden=128, predictor_layers=2),
    "paper": PLDMConfig(),
    "vit_tiny": dataclasses.replace(_VIT, **CPU_TINY_SIZES),  # LeWM's tiny network: minutes on a CPU at 64×64
    "vit_paper": _VIT,  # the PLDM of LeWM's comparison
}
ARCHITECTURES = ("conv", "vit")


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
    """PLDM's encoder and predictor (ViT + transformer, or conv + residual MLP), one latent token per frame."""

    def __init__(self, config: PLDMConfig) -> None:
        super().__init__()
        self.config = config
        self.history = config.history
        c = config
        if c.architecture not in ARCHITECTURES:
            raise ValueError(f"pldm architecture {c.architecture!r} must be one of {', '.join(ARCHITECTURES)}")
        if c.architecture == "vit":
            self._build_vit(c)
        else:
            self._build_conv(c)
        self.idm = None  # inverse dynamics (z_t, z_{t+1}) -> a_t, only when its weight μ is used
        if c.mu_idm > 0:
            hidden = c.predictor_hidden
            self.idm = nn.Sequential(nn.Linear(2 * c.latent_dim, hidden), nn.GELU(), nn.Linear(hidden, c.action_dim))

    def _build_conv(self, c: PLDMConfig) -> None:
        """wmbench's small PLDM: conv encoder + linear projection, residual MLP predictor."""
        conv = ConvEncoder(c.image_size, c.cnn_depth, c.cnn_stages)
        self.stages = len(conv.widths)
        self.encoder = nn.Sequential(conv, nn.Linear(conv.embed_dim, c.latent_dim))
        layers, width = [], c.latent_dim + c.action_dim
        for _ in range(c.predictor_layers):
            layers += [nn.Linear(width, c.predictor_hidden), nn.LayerNorm(c.predictor_hidden), nn.GELU()]
            width = c.predictor_hidden
        layers.append(nn.Linear(width, c.latent_dim))
        self.predictor = nn.Sequential(*layers)

    def _build_vit(self, c: PLDMConfig) -> None:
        """LeWM's parts: ViT + BatchNorm projector, action encoder, AdaLN-zero causal transformer + projector."""
        if not c.teacher_forcing:
            raise ValueError("pldm architecture 'vit' is teacher-forced, as in LeWM's comparison: set teacher_forcing")
        self.encoder = ViTEncoder.from_config(c)
        self.projector = Projector(c.encoder_width, c.projector_hidden, c.latent_dim)
        width = c.predictor_width
        self.action_encoder = ActionEncoder(c.action_dim, c.action_conv_dim, c.action_mlp_ratio * width, width)
        self.predictor = CausalPredictor(
            c.latent_dim,
            width,
            c.predictor_depth,
            c.predictor_heads,
            c.predictor_dim_head,
            c.predictor_mlp_dim,
            c.predictor_dropout,
            0.0,  # no dropout on the input embeddings (the authors' library)
            c.max_frames,
        )
        self.predictor_projector = Projector(width, c.projector_hidden, c.latent_dim)
        self.normalise = ImageNetNormalise()

    @property
    def tokens_per_frame(self) -> int:
        return 1

    def describe(self) -> dict[str, str]:
        c = self.config
        weights = f"{c.alpha_var},{c.beta_cov},{c.gamma_time_sim},{c.zeta_time_var},{c.nu_time_cov},{c.mu_idm}"
        if c.architecture == "vit":
            encoder = f"ViT {c.encoder_depth}×{c.encoder_width} patch {c.patch_size}, trained from scratch"
        else:
            encoder = f"conv {self.stages}×{c.cnn_depth}, trained from scratch"
        return {"encoder": encoder, "pldm_weights": weights}

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, T, 1, D); the ViT is read at its CLS token through the projector."""
        batch = pixels.shape[0]
        images = rearrange(pixels, "b t c h w -> (b t) c h w")
        if self.config.architecture == "vit":
            z = self.projector(self.encoder(self.normalise(images))[:, 0])  # (B·T, D)
        else:
            z = self.encoder(images)
        return rearrange(z, "(b t) d -> b t 1 d", b=batch)

    def _step(self, z: Tensor, action: Tensor) -> Tensor:
        """ẑ_{t+1} = z_t + f(z_t, a_t); z (..., D), action (..., A)."""
        return z + self.predictor(torch.cat([z, action], dim=-1))

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """One step from every frame: (B, T, 1, D), (B, T, A) -> (B, T, 1, D); "vit" causally over the frames."""
        if self.config.architecture == "vit":
            hidden = self.predictor(rearrange(z_hist, "b t 1 d -> b t d"), self.action_encoder(actions))
            return rearrange(self.predictor_projector(hidden), "b t d -> b t 1 d")
        return self._step(z_hist, actions.unsqueeze(2))

    def start_rollout(self, z_hist: Tensor, past_actions: Tensor) -> RolloutStart:
        """The history (B, h, 1, D) and its past blocks (B, h-1, A); "vit" embeds the blocks once per plan, as LeWM.

        "conv" has nothing to make: it steps from the last latent as it is.
        """
        if self.config.architecture != "vit":
            return super().start_rollout(z_hist, past_actions)
        return RolloutStart(z_hist, past_actions, self.action_encoder(past_actions))  # embeddings (B, h-1, width)

    def rollout_from(self, start: RolloutStart, plan: Tensor) -> Tensor:
        """Imagine H latents: plan (B, H, A) -> (B, H, 1, D), as :meth:`rollout` does.

        "vit", as LeWM: the plan's blocks embedded in one call beside the past ones, and at each
        step only the last token through the output projector.
        """
        if self.config.architecture != "vit":
            return self.rollout(start.latents, plan)
        latents = rearrange(start.latents, "b t 1 d -> b t d")  # (B, h, D)
        blocks = torch.cat([start.past_embeddings, self.action_encoder(plan)], dim=1)  # (B, h-1+H, width)
        imagined = self.predictor.imagine(latents, blocks, self.predictor_projector, self.history)  # (B, H, D)
        return rearrange(imagined, "b t d -> b t 1 d")

    def rollout(self, z_hist: Tensor, plan: Tensor, past_actions: Tensor | None = None) -> Tensor:
        """Unroll from the last frame (conv, Markov) or the last ``history`` frames (vit): -> (B, H, 1, D)."""
        if self.config.architecture == "vit":
            return super().rollout(z_hist, plan, past_actions)
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
        target = z[:, 1:]
        if c.architecture == "vit":  # windows of history + 1 frames: never more context than in planning
            span = min(z.shape[1], self.history + 1)
            z_windows = rearrange(z.unfold(1, span, 1), "b w n d f -> (b w) f n d")  # (B·W, span, 1, D)
            action_windows = rearrange(actions.unfold(1, span, 1), "b w a f -> (b w) f a")  # (B·W, span, A)
            predicted, target = self.predict(z_windows[:, :-1], action_windows[:, :-1]), z_windows[:, 1:]
        elif c.teacher_forcing:
            predicted = self.predict(z[:, :-1], actions[:, :-1])
        else:
            predicted = self.rollout(z[:, :1], actions[:, :-1])  # open-loop from frame 0
        terms = {"pred": F.mse_loss(predicted.float(), target.float())}
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
    """The zoo builder: a preset ("tiny", "paper", "vit_tiny", "vit_paper") at the task's image size and action width.

    "vit" takes the protocol's ``history``; "conv" does not use it: it plans from its current
    state, which summarises the past.
    """
    config = resolve_config("pldm", SIZES, size, image_size=image_size, action_dim=action_dim, **overrides)
    if config.architecture == "vit" and "history" not in overrides:
        config = dataclasses.replace(config, history=history)
    return PLDM(config)
