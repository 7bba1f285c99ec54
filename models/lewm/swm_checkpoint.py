"""Reading a LeWM checkpoint of the authors' library (stable-worldmodel) into wmbench's LeWM parts.

Their ``save_pretrained`` writes a folder with the model's ``state_dict`` (``weights.pt``, or one
``*.pt`` file such as ``weights_epoch_10.pt``) beside ``config.json``, the Hydra tree their
``load_pretrained`` instantiates. Supported, checked on stable-worldmodel 0.1.1 (tests/fixtures/swm):

``config.json``: a root (``stable_worldmodel.wm.lewm.LeWM``, or le-wm's ``jepa.JEPA``) with five
parts, each a ``_target_`` and its arguments, the classes' own defaults where a field is absent:

* ``encoder``: ``transformers.ViTModel`` with ``config`` (``ViTConfig`` fields: ``image_size``,
  ``patch_size``, ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
  ``intermediate_size``, ``layer_norm_eps``, ``qkv_bias``, ``hidden_act`` = gelu), or
  ``stable_pretraining.backbone.utils.vit_hf`` (``size`` tiny … huge, ``patch_size``, ``image_size``,
  ``ViTConfig`` fields as keywords);
* ``predictor``: ``Predictor`` / ``ARPredictor`` (``num_frames``, ``depth``, ``heads``, ``dim_head``,
  ``mlp_dim``, ``input_dim``, ``hidden_dim``, ``output_dim``, ``dropout``, ``emb_dropout``);
* ``action_encoder``: ``Embedder`` (``input_dim`` = frameskip × action width, ``smoothed_dim``,
  ``emb_dim``, ``mlp_scale``);
* ``projector`` and ``pred_proj``: ``MLP`` (``input_dim``, ``hidden_dim``, ``output_dim``) with
  ``norm_fn`` BatchNorm1d.

State-dict prefixes: ``encoder.`` (Hugging Face ViT; transformers 5 names ``embeddings.*``,
``layers.<i>.attention.{q,k,v,o}_proj``, ``layers.<i>.mlp.fc{1,2}``, ``layers.<i>.layernorm_{before,after}``,
``layernorm``; transformers 4 names ``encoder.layer.<i>.attention.attention.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense`` are read too), ``predictor.``
(``pos_embedding``, ``transformer.{input_proj,cond_proj,output_proj,norm}``,
``transformer.layers.<i>.{attn.norm,attn.to_qkv,attn.to_out.0,mlp.net.{0,1,4},adaLN_modulation.1}``),
``action_encoder.{patch_embed,embed.0,embed.2}``, ``projector.net.{0,1,3}``, ``pred_proj.net.{0,1,3}``.

The mapping is exact where the parts match one to one; three of their Linears that wmbench's
predictor does not have are folded into the neighbouring Linear (exact up to float rounding):
``cond_proj`` into the action encoder's last layer, ``output_proj`` into the output projector's
first, and ``input_proj`` moves their positional embeddings (added before it) to after it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

# stable_pretraining.backbone.utils.vit_hf's sizes (intermediate size 4 × hidden).
VIT_HF_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
PARTS = ("encoder", "predictor", "action_encoder", "projector", "pred_proj")
# State-dict entries wmbench has no use for: the mask token of masked-image pretraining, a pooler head.
UNUSED = re.compile(r"encoder\.(embeddings\.mask_token|pooler\..*)")


class CheckpointError(ValueError):
    """A stable-worldmodel checkpoint folder that cannot be read: the message names the path and what is wrong."""


@dataclass(frozen=True)
class SWMCheckpoint:
    """A checkpoint folder read: its weights file, their sha256, and the architecture its config.json fixes."""

    folder: Path
    weights: Path
    sha256: str
    architecture: dict[str, Any]  # SWMLeWMConfig fields, e.g. {"encoder_width": 192, "max_frames": 3, ...}


def read_checkpoint(path: str | Path) -> SWMCheckpoint:
    """The checkpoint at ``path`` (a folder with config.json and one .pt file, or a .pt file beside a config.json)."""
    path = Path(path).expanduser()
    if not path.is_absolute():  # Ray runs each trial in a working directory of its own
        raise CheckpointError(f"stable-worldmodel checkpoint {str(path)!r} must be an absolute path")
    if path.suffix == ".pt":
        folder, weights = path.parent, path
        if not weights.is_file():
            raise CheckpointError(f"stable-worldmodel checkpoint {str(path)!r} does not exist")
    else:
        folder = path
        if not folder.is_dir():
            raise CheckpointError(f"stable-worldmodel checkpoint folder {str(path)!r} does not exist")
        candidates = sorted(folder.glob("*.pt"))
        if len(candidates) != 1:
            found = "no .pt file" if not candidates else f"{len(candidates)} .pt files; name one, e.g. {candidates[-1]}"
            raise CheckpointError(
                f"stable-worldmodel checkpoint folder {str(folder)!r} holds {found} (expected weights.pt)"
            )
        weights = candidates[0]
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"stable-worldmodel checkpoint folder {str(folder)!r} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from None
    return SWMCheckpoint(folder, weights, _sha256(weights), architecture(config, config_path))


def architecture(config: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """The SWMLeWMConfig fields that a LeWM ``config.json`` tree fixes; CheckpointError naming what is unsupported."""
    missing = [part for part in PARTS if not isinstance(config.get(part), dict)] if isinstance(config, dict) else PARTS
    if missing:
        raise CheckpointError(
            f"{where} is not a LeWM model config: it has no {', '.join(missing)} part(s) "
            "(expected the Hydra tree save_pretrained writes: _target_ plus encoder, predictor, action_encoder, "
            "projector, pred_proj)"
        )
    fields = _encoder_fields(config["encoder"], where)
    predictor, actions = config["predictor"], config["action_encoder"]
    projector, pred_proj = config["projector"], config["pred_proj"]
    for name, part in (("projector", projector), ("pred_proj", pred_proj)):
        norm = str((part.get("norm_fn") or {}).get("_target_", "torch.nn.LayerNorm (the MLP's default)"))
        if not norm.endswith("BatchNorm1d"):
            raise CheckpointError(f"{where}: {name}.norm_fn is {norm}; wmbench's LeWM projectors use BatchNorm1d")
        activation = str((part.get("act_fn") or {}).get("_target_", "torch.nn.GELU"))
        if not activation.endswith("GELU"):
            raise CheckpointError(f"{where}: {name}.act_fn is {activation}; wmbench's LeWM projectors use GELU")
    latent = int(projector.get("output_dim") or projector["input_dim"])
    if int(projector["input_dim"]) != fields["encoder_width"]:
        raise CheckpointError(f"{where}: projector.input_dim {projector['input_dim']} is not the encoder's width")
    if int(pred_proj["hidden_dim"]) != int(projector["hidden_dim"]):
        raise CheckpointError(
            f"{where}: projector.hidden_dim {projector['hidden_dim']} and pred_proj.hidden_dim "
            f"{pred_proj['hidden_dim']} differ; wmbench's LeWM shares one projector_hidden"
        )
    widths = {
        "predictor.input_dim": predictor["input_dim"],
        "action_encoder.emb_dim": actions.get("emb_dim", 10),
        "pred_proj.output_dim": pred_proj.get("output_dim") or pred_proj["input_dim"],
    }
    for name, value in widths.items():
        if int(value) != latent:
            raise CheckpointError(f"{where}: {name} is {value}, not the latent width {latent} (projector.output_dim)")
    predictor_out = predictor.get("output_dim") or predictor["input_dim"]
    if int(pred_proj["input_dim"]) != int(predictor_out):
        raise CheckpointError(
            f"{where}: pred_proj.input_dim {pred_proj['input_dim']} is not predictor.output_dim {predictor_out}"
        )
    num_frames = int(predictor["num_frames"])
    fields.update(
        latent_dim=latent,
        projector_hidden=int(projector["hidden_dim"]),
        predictor_depth=int(predictor["depth"]),
        predictor_heads=int(predictor["heads"]),
        predictor_dim_head=int(predictor.get("dim_head", 64)),
        predictor_width=int(predictor["hidden_dim"]),
        predictor_mlp_dim=int(predictor["mlp_dim"]),
        predictor_dropout=float(predictor.get("dropout", 0.0)),
        predictor_emb_dropout=float(predictor.get("emb_dropout", 0.0)),
        max_frames=num_frames,
        action_dim=int(actions.get("input_dim", 10)),
        action_conv_dim=int(actions.get("smoothed_dim", 10)),
        action_mlp_ratio=int(actions.get("mlp_scale", 4)),
    )
    return fields


def _encoder_fields(encoder: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """The encoder_* fields (and image and patch size) of a Hugging Face ViT encoder config."""
    target = str(encoder.get("_target_", ""))
    if target.endswith("ViTModel"):
        vit = dict(encoder.get("config") or {})
    elif target.endswith("vit_hf"):
        size = encoder.get("size", "tiny")
        if size not in VIT_HF_SIZES:
            raise CheckpointError(f"{where}: encoder.size {size!r} is not one of {', '.join(VIT_HF_SIZES)}")
        width, depth, heads = VIT_HF_SIZES[size]
        extra = {k: v for k, v in encoder.items() if k not in ("_target_", "size", "pretrained", "use_mask_token")}
        vit = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads,
               "intermediate_size": 4 * width, "patch_size": 16, "image_size": 224, **extra}  # fmt: skip
    else:
        raise CheckpointError(
            f"{where}: encoder._target_ {target!r} is not supported "
            "(transformers.ViTModel or stable_pretraining.backbone.utils.vit_hf)"
        )
    width, heads = int(vit.get("hidden_size", 768)), int(vit.get("num_attention_heads", 12))
    unsupported = {
        "hidden_act": (vit.get("hidden_act", "gelu"), "gelu"),
        "num_channels": (vit.get("num_channels", 3), 3),
        "head_dim": (vit.get("head_dim", width // heads), width // heads),
    }
    for name, (value, accepted) in unsupported.items():
        if value != accepted:
            raise CheckpointError(f"{where}: encoder {name} {value!r} is not supported (wmbench's ViT: {accepted!r})")
    return {
        "image_size": int(vit.get("image_size", 224)),
        "patch_size": int(vit.get("patch_size", 16)),
        "encoder_width": width,
        "encoder_depth": int(vit.get("num_hidden_layers", 12)),
        "encoder_heads": heads,
        "encoder_mlp_dim": int(vit.get("intermediate_size", 3072)),
        "encoder_norm_eps": float(vit.get("layer_norm_eps", 1e-12)),
        "encoder_qkv_bias": bool(vit.get("qkv_bias", True)),
    }


# transformers 4 names of a ViTModel's layers -> transformers 5 names (the ones mapped below).
HF4_NAMES = [
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"encoder.layers.\1.attention.q_proj."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"encoder.layers.\1.attention.k_proj."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"encoder.layers.\1.attention.v_proj."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.attention.o_proj."),
    (r"encoder\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.mlp.fc1."),
    (r"encoder\.encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.mlp.fc2."),
    (r"encoder\.encoder\.layer\.(\d+)\.layernorm_", r"encoder.layers.\1.layernorm_"),
]
# Their parameter names -> ours, one to one (the rest is assembled in wmbench_state).
RENAMES = [
    (r"encoder\.embeddings\.cls_token", "encoder.cls_token"),
    (r"encoder\.embeddings\.position_embeddings", "encoder.pos_embed"),
    (r"encoder\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed.proj."),
    (r"encoder\.layers\.(\d+)\.layernorm_before\.", r"encoder.blocks.\1.norm1."),
    (r"encoder\.layers\.(\d+)\.layernorm_after\.", r"encoder.blocks.\1.norm2."),
    (r"encoder\.layers\.(\d+)\.attention\.o_proj\.", r"encoder.blocks.\1.attn.out.0."),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.", r"encoder.blocks.\1.mlp.0."),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.", r"encoder.blocks.\1.mlp.3."),
    (r"encoder\.layernorm\.", "encoder.norm."),
    (r"projector\.net\.", "projector.net."),
    (r"pred_proj\.net\.", "predictor_projector.net."),
    (r"action_encoder\.patch_embed\.", "action_encoder.conv."),
    (r"action_encoder\.embed\.0\.", "action_encoder.mlp.0."),
    (r"action_encoder\.embed\.2\.", "action_encoder.mlp.2."),
    (r"predictor\.transformer\.input_proj\.", "predictor.input."),
    (r"predictor\.transformer\.norm\.", "predictor.norm."),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.norm\.", r"predictor.blocks.\1.attn_norm."),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.to_qkv\.", r"predictor.blocks.\1.attn.qkv."),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.to_out\.0\.", r"predictor.blocks.\1.attn.out.0."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.0\.", r"predictor.blocks.\1.mlp_norm."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.1\.", r"predictor.blocks.\1.mlp.0."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.4\.", r"predictor.blocks.\1.mlp.3."),
    (r"predictor\.transformer\.layers\.(\d+)\.adaLN_modulation\.1\.", r"predictor.blocks.\1.modulation.1."),
]


def wmbench_state(theirs: dict[str, Tensor], ours: dict[str, Tensor]) -> dict[str, Tensor]:
    """Their LeWM state dict as one for wmbench's (``ours``: the target model's state dict, for names and shapes)."""
    state = {}
    for key, value in theirs.items():
        for pattern, replacement in HF4_NAMES:
            key = re.sub(f"^{pattern}", replacement, key)
        state[key] = value
    mapped: dict[str, Tensor] = {}

    # Hugging Face keeps query, key and value apart; wmbench's attention holds one fused (q k v) Linear.
    for layer in sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.attention", k))}):
        for kind in ("weight", "bias"):
            parts = [state.pop(f"encoder.layers.{layer}.attention.{p}_proj.{kind}", None) for p in "qkv"]
            if all(part is not None for part in parts):
                mapped[f"encoder.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)

    # Their positional embeddings are added before the input projection; ours after it: W(x + p) + b = (Wx + b) + Wp.
    position = state.pop("predictor.pos_embedding", None)
    if position is not None:
        projection = state.get("predictor.transformer.input_proj.weight")
        mapped["predictor.pos_embed"] = position if projection is None else _fold(position, projection)
    # cond_proj(embed(a)) is one Linear after the other: folded into the action encoder's last layer.
    condition = (state.pop("predictor.transformer.cond_proj.weight", None),
                 state.pop("predictor.transformer.cond_proj.bias", None))  # fmt: skip
    if condition[0] is not None and "action_encoder.embed.2.weight" in state:
        weight, bias = state.pop("action_encoder.embed.2.weight"), state.pop("action_encoder.embed.2.bias")
        mapped["action_encoder.mlp.2.weight"] = _fold(weight.T, condition[0]).T
        mapped["action_encoder.mlp.2.bias"] = _fold(bias, condition[0]) + condition[1]
    # output_proj then pred_proj's first Linear: folded into our output projector's first layer.
    output = (state.pop("predictor.transformer.output_proj.weight", None),
              state.pop("predictor.transformer.output_proj.bias", None))  # fmt: skip
    if output[0] is not None and "pred_proj.net.0.weight" in state:
        weight, bias = state.pop("pred_proj.net.0.weight"), state.pop("pred_proj.net.0.bias")
        mapped["predictor_projector.net.0.weight"] = _fold(output[0].T, weight).T
        mapped["predictor_projector.net.0.bias"] = _fold(output[1], weight) + bias

    unmapped = []
    for key, value in state.items():
        for pattern, replacement in RENAMES:
            renamed, count = re.subn(f"^{pattern}", replacement, key)
            if count:
                mapped[renamed] = value
                break
        else:
            if not UNUSED.fullmatch(key):
                unmapped.append(key)
    # heads == 1 and dim_head == width: their attention has no output Linear (an identity in ours).
    for key in ours:
        if (m := re.fullmatch(r"predictor\.blocks\.(\d+)\.attn\.out\.0\.(weight|bias)", key)) and key not in mapped:
            prefix = f"predictor.transformer.layers.{m.group(1)}.attn.to_qkv.weight"
            if prefix in theirs:
                eye = torch.eye(ours[key].shape[0]) if m.group(2) == "weight" else torch.zeros(ours[key].shape)
                mapped[key] = eye.to(ours[key].dtype)

    missing = sorted(set(ours) - set(mapped))
    if unmapped or missing:
        raise CheckpointError(
            "the checkpoint's state dict does not match its config.json: "
            + "; ".join(
                part
                for part in (
                    f"unexpected {', '.join(unmapped[:4])}" if unmapped else "",
                    f"wmbench's LeWM needs {', '.join(missing[:4])}" if missing else "",
                )
                if part
            )
        )
    for key, value in mapped.items():
        if key in ours and value.shape != ours[key].shape:
            raise CheckpointError(
                f"the checkpoint's weights do not match its config.json: {key} has shape {tuple(value.shape)}, "
                f"its config gives {tuple(ours[key].shape)}"
            )
    return {key: value for key, value in mapped.items() if key in ours}


def _fold(vector: Tensor, weight: Tensor) -> Tensor:
    """``vector @ weight.T`` in float64, back in the weight's dtype: one Linear's weights pushed through another."""
    return (vector.double() @ weight.double().T).to(weight.dtype)


def load_weights(checkpoint: SWMCheckpoint) -> dict[str, Tensor]:
    """The checkpoint's state dict, read with ``weights_only=True``; CheckpointError if it is not one."""
    try:
        state = torch.load(checkpoint.weights, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickled module, a damaged or truncated file
        raise CheckpointError(f"{checkpoint.weights} cannot be read as a state dict ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise CheckpointError(f"{checkpoint.weights} does not hold a state dict of tensors")
    return state


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
