"""Dreamer-style world model: a recurrent state-space model (RSSM) trained by reconstruction.

Following DreamerV3 (Hafner et al., 2023; REFERENCE.md "Baselines"): a convolutional encoder
embeds each frame; a GRU carries a deterministic state h_t; a stochastic state s_t of 32
categorical variables with 32 classes each is sampled with straight-through gradients from a
prior p(s_t | h_t) when imagining and from a posterior q(s_t | h_t, e_t) when observing; a
transposed-convolution decoder reconstructs the frame from the features f_t = h_t ++ s_t.

    h_t     = GRU(h_{t-1}, [s_{t-1}, a_{t-1}])        (h_0 = 0)
    prior   p(s_t | h_t),   posterior q(s_t | h_t, e_t)
    L       = ‖decode(f_t) − x_t‖² + β_dyn·max(1, KL[sg(q) ‖ p]) + β_rep·max(1, KL[q ‖ sg(p)])

Planning uses the same latent CEM as every zoo entry. Its latent (``plan_latent``) is, by
default, the stochastic state's class probabilities: the posterior q(s | h_0, e) of a frame
encoded alone, the prior p(s_H | h_H) of an imagined one. Both are distributions over the same
code, so ‖ẑ_H − z_goal‖² is the Brier score of the imagined state predicting the goal's code, a
distance toward the goal; surprise (predict vs encode) compares the same two. The features
h ++ s are not comparable that way: a frame encoded alone has h = h_0, so a cost on them adds
‖h_H − h_0‖², which does not depend on the goal and dominated the cost (Spearman 0.99 with it
on random plans); "features" stays an option only to re-run rows made with it.

``encode`` filters the posterior over the given frames when it is given the actions between
them (features only); without actions (the planner's call) it encodes every frame as the first
of a sequence, from h_0 — the state the filter starts every training window in — so the current
frame and the goal are encoded alike. ``rollout`` imagines with the prior from the last frame's
state, carrying h and s from step to step; that state stands for the past, so ``history`` is 1.
In eval mode the stochastic state is the mode of its distribution, so a rollout is
deterministic; in training mode it is a straight-through sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.blocks.conv import ConvDecoder, ConvEncoder
from models.presets import resolve_config
from models.world_model import WorldModel


@dataclass(frozen=True)
class DreamerConfig:
    """RSSM sizes and loss weights; defaults are DreamerV3's model size S (its paper's size table,
    not in REFERENCE.md) and the KL recipe of REFERENCE.md "Baselines"."""

    image_size: int = 64  # DreamerV3 trains on 64×64 frames
    action_dim: int = 2
    cnn_depth: int = 32  # channels of the first conv stage, doubled per stage up to 8× (DreamerV3 size S)
    cnn_stages: int | None = None  # stride-2 stages; None: halve down to a 4–7 pixel map (DreamerV3: 64 -> 4)
    deter: int = 512  # GRU state width (DreamerV3 size S)
    hidden: int = 512  # MLP width (DreamerV3 size S)
    stoch: int = 32  # categorical variables (DreamerV3)
    classes: int = 32  # classes per variable (DreamerV3)
    unimix: float = 0.01  # mix 1% uniform into every categorical (DreamerV3)
    free_nats: float = 1.0  # KL below 1 nat is not penalised (DreamerV3 "free bits")
    kl_dyn: float = 0.8  # KL balancing: weight of the prior-training side (DreamerV2 α = 0.8)
    kl_rep: float = 0.2  # ... and of the posterior-regularising side (1 − α)
    # The latent the planner and surprise compare: "probabilities" of the stochastic state (posterior
    # when encoding, prior when imagining), "stochastic" its one-hot sample, or "features" h ++ s
    # (DreamerV3's features). A frame encoded alone has h = h_0, so "features" adds the goal-blind
    # ‖h_H − h_0‖² to every cost; it is kept only to re-run rows made with it (wmbench).
    plan_latent: str = "probabilities"
    history: int = 1  # the filtered features of the current frame summarise the past, whatever the protocol's


PLAN_LATENTS = ("probabilities", "stochastic", "features")

SIZES: dict[str, DreamerConfig] = {
    "tiny": DreamerConfig(cnn_depth=8, deter=64, hidden=64, stoch=16, classes=16),
    "paper": DreamerConfig(),
}


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


class DreamerWM(WorldModel):
    """RSSM world model; its latent is one token per frame (``plan_latent``: s's probabilities by default)."""

    def __init__(self, config: DreamerConfig) -> None:
        super().__init__()
        self.config = config
        self.history = config.history
        c = config
        self.stoch_dim = c.stoch * c.classes
        if c.plan_latent not in PLAN_LATENTS:
            raise ValueError(f"dreamer plan_latent {c.plan_latent!r} must be one of {', '.join(PLAN_LATENTS)}")
        self.feature_dim = c.deter + self.stoch_dim
        self.encoder = ConvEncoder(c.image_size, c.cnn_depth, c.cnn_stages)
        self.decoder = ConvDecoder(self.feature_dim, self.encoder)
        self.gru_input = nn.Sequential(
            nn.Linear(self.stoch_dim + c.action_dim, c.hidden), nn.LayerNorm(c.hidden), nn.SiLU()
        )
        self.gru = nn.GRUCell(c.hidden, c.deter)
        self.prior_net = _mlp(c.deter, c.hidden, self.stoch_dim)
        self.posterior_net = _mlp(c.deter + self.encoder.embed_dim, c.hidden, self.stoch_dim)

    @property
    def tokens_per_frame(self) -> int:
        return 1

    def describe(self) -> dict[str, str]:
        c = self.config
        stages = len(self.encoder.widths)
        return {"encoder": f"conv {stages}×{c.cnn_depth}, trained from scratch (RSSM {c.stoch}×{c.classes})"}

    # --- the RSSM's steps -------------------------------------------------------------------

    def _distribution(self, logits: Tensor) -> Tensor:
        """Flat logits (..., S·K) -> class probabilities (..., S, K) with 1% uniform mixed in."""
        probs = rearrange(logits.float(), "... (s k) -> ... s k", k=self.config.classes).softmax(-1)  # fp32 under bf16
        return (1.0 - self.config.unimix) * probs + self.config.unimix / self.config.classes

    def _sample(self, probs: Tensor) -> Tensor:
        """One-hot state (..., S·K): a straight-through sample when training, the mode otherwise."""
        if self.training:
            index = torch.distributions.Categorical(probs=probs).sample()
            one_hot = F.one_hot(index, self.config.classes).to(probs.dtype)
            one_hot = one_hot + probs - probs.detach()  # straight-through gradients
        else:
            one_hot = F.one_hot(probs.argmax(-1), self.config.classes).to(probs.dtype)
        return rearrange(one_hot, "... s k -> ... (s k)")

    def _recur(self, deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
        """h_t = GRU(h_{t-1}, [s_{t-1}, a_{t-1}]); all (B, ·)."""
        return self.gru(self.gru_input(torch.cat([stoch, action], dim=-1)), deter)

    def _imagine_step(self, deter: Tensor, stoch: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the prior: (h, s, a) -> (h', s', p(s' | h')), the probabilities (B, S, K)."""
        deter = self._recur(deter, stoch, action)
        prior = self._distribution(self.prior_net(deter))
        return deter, self._sample(prior), prior

    def _observe(self, embed: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Filter a sequence: embed (B, T, E), actions (B, T, A) -> h (B, T, deter), s (B, T, S·K),
        prior and posterior probabilities (B, T, S, K)."""
        batch, steps = embed.shape[:2]
        deter = embed.new_zeros(batch, self.config.deter)
        stoch = embed.new_zeros(batch, self.stoch_dim)
        deters, stochs, priors, posteriors = [], [], [], []
        for t in range(steps):
            if t > 0:
                deter = self._recur(deter, stoch, actions[:, t - 1])
            prior = self._distribution(self.prior_net(deter))
            posterior = self._distribution(self.posterior_net(torch.cat([deter, embed[:, t]], dim=-1)))
            stoch = self._sample(posterior)
            deters.append(deter)
            stochs.append(stoch)
            priors.append(prior)
            posteriors.append(posterior)
        return tuple(torch.stack(x, dim=1) for x in (deters, stochs, priors, posteriors))

    def _latent(self, deter: Tensor, stoch: Tensor, probs: Tensor) -> Tensor:
        """The state as the planner sees it (``plan_latent``): s's probabilities (..., S·K), s, or h ++ s."""
        if self.config.plan_latent == "features":
            return torch.cat([deter, stoch], dim=-1)
        if self.config.plan_latent == "stochastic":
            return stoch
        return rearrange(probs, "... s k -> ... (s k)")

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latent (..., D) -> h (..., deter), s (..., S·K); a latent without h is a frame encoded alone (h_0)."""
        if self.config.plan_latent == "features":
            return z[..., : self.config.deter], z[..., self.config.deter :]
        deter = z.new_zeros(*z.shape[:-1], self.config.deter)
        if self.config.plan_latent == "stochastic":
            return deter, z
        return deter, self._sample(rearrange(z, "... (s k) -> ... s k", k=self.config.classes))

    # --- the WorldModel contract -------------------------------------------------------------

    def encode(self, pixels: Tensor, actions: Tensor | None = None) -> Tensor:
        """Posterior latents of each frame: pixels (B, T, 3, H, W) -> z (B, T, 1, D), D = S·K (or deter + S·K).

        With the actions between the frames (B, T, A), the posterior is filtered over the
        sequence; without them, every frame is encoded as the first of a sequence (from h_0).
        """
        batch = pixels.shape[0]
        embed = rearrange(self.encoder(rearrange(pixels, "b t c h w -> (b t) c h w")), "(b t) e -> b t e", b=batch)
        if actions is not None:
            if self.config.plan_latent != "features":
                raise ValueError("dreamer encode(actions=...) filters h, which needs plan_latent='features'")
            deter, stoch, _, posterior = self._observe(embed, actions)  # (B, T, ·)
            return rearrange(self._latent(deter, stoch, posterior), "b t d -> b t 1 d")
        singles = rearrange(embed, "b t e -> (b t) 1 e")  # each frame a sequence of one
        no_action = singles.new_zeros(singles.shape[0], 1, self.config.action_dim)
        deter, stoch, _, posterior = self._observe(singles, no_action)
        return rearrange(self._latent(deter, stoch, posterior), "(b t) 1 d -> b t 1 d", b=batch)

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """One prior step from every frame: z (B, T, 1, D), actions (B, T, A) -> z_next (B, T, 1, D).

        A latent without h is taken as a frame encoded alone (h = h_0), as ``encode`` makes it.
        """
        batch = z_hist.shape[0]
        deter, stoch = self._split(rearrange(z_hist, "b t 1 d -> (b t) d"))
        deter, stoch, prior = self._imagine_step(deter, stoch, rearrange(actions, "b t a -> (b t) a"))
        return rearrange(self._latent(deter, stoch, prior), "(b t) d -> b t 1 d", b=batch)

    def rollout(self, z_hist: Tensor, plan: Tensor, past_actions: Tensor | None = None) -> Tensor:
        """Imagine with the prior from the last frame's state: z_hist (B, h, 1, D), plan (B, H, A) -> (B, H, 1, D).

        The last frame's latent stands for the past, so ``past_actions`` are not needed; h is
        carried from step to step here, also when the planner's latent leaves it out.
        """
        deter, stoch = self._split(z_hist[:, -1, 0])
        imagined = []
        for step in range(plan.shape[1]):
            deter, stoch, prior = self._imagine_step(deter, stoch, plan[:, step])
            imagined.append(self._latent(deter, stoch, prior))
        return rearrange(torch.stack(imagined, dim=1), "b t d -> b t 1 d")

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Reconstruction (squared error summed over pixels) plus balanced KL with free bits."""
        pixels, actions = batch["pixels"], batch["actions"]
        batch_size = pixels.shape[0]
        embed = rearrange(self.encoder(rearrange(pixels, "b t c h w -> (b t) c h w")), "(b t) e -> b t e", b=batch_size)
        deter, stoch, prior, posterior = self._observe(embed, actions)
        features = rearrange(torch.cat([deter, stoch], dim=-1), "b t d -> (b t) d")
        reconstruction = rearrange(self.decoder(features), "(b t) c h w -> b t c h w", b=batch_size)
        recon = (reconstruction - pixels).square().sum(dim=(2, 3, 4)).mean()
        kl_dyn = _categorical_kl(posterior.detach(), prior)  # trains the prior towards the posterior
        kl_rep = _categorical_kl(posterior, prior.detach())  # keeps the posterior predictable
        c = self.config
        kl_loss = c.kl_dyn * kl_dyn.clamp(min=c.free_nats).mean() + c.kl_rep * kl_rep.clamp(min=c.free_nats).mean()
        return {"loss": recon + kl_loss, "recon": recon, "kl": kl_dyn.mean().detach()}


def _categorical_kl(p: Tensor, q: Tensor) -> Tensor:
    """KL[p ‖ q] of independent categoricals (..., S, K), summed over the S variables -> (...)."""
    return (p * (p.log() - q.log())).sum(dim=(-2, -1))


def build(size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any) -> DreamerWM:
    """The zoo builder: a preset ("tiny" or "paper") at the task's image size and action width.

    ``history`` is not used: the model plans from its current state, which summarises the past.
    """
    config = resolve_config("dreamer", SIZES, size, image_size=image_size, action_dim=action_dim, **overrides)
    return DreamerWM(config)
