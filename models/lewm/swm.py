"""LeWM in the authors' library's layout (stable-worldmodel), and their checkpoints loaded into it.

The same method as models/lewm/model.py, with the two layout details in which the authors'
code differs from wmbench's LeWM, so that a checkpoint trained there is computed here to float
precision (REFERENCE.md, "The authors' evaluation code"):

* the encoder is Hugging Face's ``ViTModel``: query, key and value with biases, LayerNorm eps 1e-12;
* each predictor block normalises its modulated input once more (an affine LayerNorm at the
  start of the attention and of the MLP branch), and the AdaLN norms use eps 1e-6.

``overrides: {checkpoint: PATH}`` loads a folder their ``save_pretrained`` wrote (``weights.pt`` +
``config.json``; models/lewm/swm_checkpoint.py lists the supported keys). Its config.json fixes
the architecture, the size preset only the fields training reads (SIGReg), and the model is
evaluated as loaded: a trial does not train it (``pretrained``). The task must match it: the
frame size, frameskip × action width, and a protocol history no longer than its predictor's
positions. Without a checkpoint, ``swm_lewm`` is their architecture trained here like any entry.

Actions: their checkpoints carry no action statistics (their training script z-scores each
action column of its dataset and keeps the statistics out of the checkpoint). A trial plans the
loaded model in the standardised units of the trial's own training dataset (tasks/scaler.py),
which is right when that dataset's actions have the statistics theirs had: the same task,
policy and action convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.blocks.predictor import CPU_TINY_SIZES
from models.lewm.model import LeWM, LeWMConfig
from models.lewm.swm_checkpoint import CheckpointError, load_weights, read_checkpoint, wmbench_state
from models.presets import resolve_config


@dataclass(frozen=True)
class SWMLeWMConfig(LeWMConfig):
    """LeWM's fields, plus the authors' layout and an optional checkpoint folder."""

    checkpoint: str | None = None  # a stable-worldmodel checkpoint folder (weights.pt + config.json)
    encoder_qkv_bias: bool = True  # Hugging Face ViTConfig.qkv_bias
    encoder_norm_eps: float = 1e-12  # Hugging Face ViTConfig.layer_norm_eps
    predictor_norm_eps: float = 1e-6  # their ConditionalBlock's AdaLN LayerNorms


SIZES: dict[str, SWMLeWMConfig] = {
    "tiny": SWMLeWMConfig(**CPU_TINY_SIZES),
    # The published configuration in their layout (le-wm config/train/model/lewm.yaml).
    "paper": SWMLeWMConfig(),
}


class SWMLeWM(LeWM):
    """LeWM whose encoder, action encoder and predictor follow the authors' layout; see the module docstring."""

    def __init__(self, cfg: SWMLeWMConfig) -> None:
        super().__init__(cfg)
        self.checkpoint_sha256: str | None = None  # set by build() when the weights come from a checkpoint

    def encoder_layout(self, cfg: SWMLeWMConfig) -> dict[str, Any]:
        """Hugging Face's ViT: query, key and value with biases, LayerNorm eps 1e-12."""
        return {"qkv_bias": cfg.encoder_qkv_bias, "norm_eps": cfg.encoder_norm_eps}

    def action_hidden(self, cfg: SWMLeWMConfig) -> int:
        """Their Embedder's hidden width is mlp_scale × the latent width (their cond_proj, folded in, widens it)."""
        return cfg.action_mlp_ratio * cfg.latent_dim

    def predictor_layout(self, cfg: SWMLeWMConfig) -> dict[str, Any]:
        """Their ConditionalBlock: each branch's modulated input normalised once more, AdaLN eps 1e-6."""
        return {"norm_eps": cfg.predictor_norm_eps, "branch_norm": True}

    @property
    def pretrained(self) -> bool:
        """Loaded from a stable-worldmodel checkpoint: evaluated as it is, never trained by a trial."""
        return self.config.checkpoint is not None

    def describe(self) -> dict[str, str]:
        facts = super().describe() | {"layout": "stable-worldmodel (HF ViT, branch-normed AdaLN predictor)"}
        if self.pretrained:
            facts |= {"checkpoint": str(self.config.checkpoint), "checkpoint_sha256": str(self.checkpoint_sha256)}
        return facts


def build(size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any) -> SWMLeWM:
    """SWMLeWM from a size preset, or from ``checkpoint`` (a stable-worldmodel folder), the task's shapes checked."""
    checkpoint = overrides.get("checkpoint")
    if checkpoint is None:
        fields = {**overrides, "history": history, "image_size": image_size, "action_dim": action_dim}
        return SWMLeWM(resolve_config("swm_lewm", SIZES, size, **fields))

    read = read_checkpoint(checkpoint)
    fixed = read.architecture
    where = f"stable-worldmodel checkpoint {str(checkpoint)!r}"
    if fixed["image_size"] != image_size:
        raise CheckpointError(f"{where} encodes {fixed['image_size']} px frames; the task renders {image_size} px")
    if fixed["action_dim"] != action_dim:
        raise CheckpointError(
            f"{where} takes action blocks of {fixed['action_dim']} values (frameskip × action width); "
            f"the task and protocol give {action_dim}"
        )
    if history > fixed["max_frames"]:
        raise CheckpointError(
            f"{where} was trained on histories of {fixed['max_frames']} frames; the protocol's history is {history}"
        )
    clashes = sorted(name for name in overrides if name in fixed and overrides[name] != fixed[name])
    if clashes:
        raise CheckpointError(f"{where} fixes {', '.join(clashes)}; drop the override(s)")
    model = SWMLeWM(resolve_config("swm_lewm", SIZES, size, **{**overrides, **fixed, "history": history}))
    state = wmbench_state(load_weights(read), model.state_dict())  # every name and shape checked
    if not next(model.parameters()).is_meta:  # a sweep's check before Ray builds on the meta device
        model.load_state_dict(state)
    model.checkpoint_sha256 = read.sha256
    return model
