"""DINOv2's ViT (Oquab et al., 2024) on the shared blocks, and loading its pretrained weights from a local file.

A torch-hub or timm state dict, ``.pth``/``.pt`` (torch.save) or ``.safetensors``, is read
without downloads; the architecture (width, depth, patch, register tokens) is read from the
checkpoint itself; torch-hub key names map onto the shared blocks, LayerScale folded into the
Linear before it, and the positional embeddings are resized to the frames' patch grid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from models.blocks.vit import ViTEncoder


class DinoV2ViT(ViTEncoder):
    """DINOv2's ViT on the shared blocks: qkv with bias, LayerNorm eps 1e-6, register tokens.

    Returns patch tokens after the final norm (DINOv2's ``x_norm_patchtokens``). LayerScale
    has no module here: it scales the output of each branch's last Linear, so the loader folds
    its γ into that Linear's weight and bias, which is exact.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, registers: int = 0) -> None:
        super().__init__(image_size, patch_size, dim, depth, heads, mlp_dim=4 * dim)
        for block in self.blocks:
            block.attn.qkv = nn.Linear(dim, 3 * dim, bias=True)  # DINOv2's qkv has a bias
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = 1e-6  # DINOv2
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.grid = image_size // patch_size

    def forward(self, images: Tensor, keep: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) normalised -> patch tokens (B, P, D); with ``keep`` (B, P') only those patches (MAE)."""
        patches = self.patch_embed(images) + self.pos_embed[:, 1:]  # (B, P, D)
        if keep is not None:
            patches = torch.gather(patches, 1, repeat(keep, "b p -> b p d", d=patches.shape[-1]))  # (B, P', D)
        batch = patches.shape[0]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)  # (B, 1, D)
        registers = self.register_tokens.expand(batch, -1, -1)  # (B, R, D): no positions (DINOv2)
        x = torch.cat([cls, registers, patches], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + registers.shape[1] :]


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.pth``/``.pt`` (torch.save) or ``.safetensors``; wrappers like {"model": ...} unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_path {str(path)!r} does not exist; give a local DINOv2 checkpoint file")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
}


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file: 8-byte little-endian header length, JSON header, raw tensor bytes."""
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    header.pop("__metadata__", None)
    body = data[8 + header_length :]
    state = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        state[name] = flat.reshape(info["shape"])
    return state


def to_hub_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a timm DINOv2 state dict (or a prefixed one) to torch-hub key names."""
    renamed = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "encoder."):
            key = key.removeprefix(prefix)
        renamed["register_tokens" if key == "reg_token" else key] = value
    return renamed


@dataclass(frozen=True)
class DinoV2Architecture:
    """The sizes a DINOv2 checkpoint implies; heads are width / 64 in every DINOv2 model."""

    dim: int
    depth: int
    patch_size: int
    registers: int

    @property
    def heads(self) -> int:
        return self.dim // 64

    @classmethod
    def of(cls, state: dict[str, Tensor]) -> DinoV2Architecture:
        missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight") if k not in state]
        if missing:
            raise ValueError(f"checkpoint has no {missing[0]!r}: not a DINOv2 ViT state dict (torch-hub or timm)")
        depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
        registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
        return cls(state["cls_token"].shape[-1], depth, state["patch_embed.proj.weight"].shape[-1], registers)


def load_dinov2(state: dict[str, Tensor], image_size: int) -> DinoV2ViT:
    """A DINOv2 ViT for ``image_size`` frames with the weights of a hub-layout state dict.

    Key map (torch-hub names): attn.proj -> attn.out.0 and mlp.fc1/fc2 -> mlp.0/mlp.3, with
    LayerScale γ folded into attn.proj and mlp.fc2; the positional embedding's patch grid is
    resized bicubically to this image size (DINOv2 trains at 518 = 37 × 14; its own resize
    uses a scale factor offset by 0.1 patch, a sub-patch difference).
    """
    state = dict(state)
    arch = DinoV2Architecture.of(state)
    if image_size % arch.patch_size:
        raise ValueError(f"encoder_image_size {image_size} must be a multiple of patch {arch.patch_size}")
    model = DinoV2ViT(image_size, arch.patch_size, arch.dim, arch.depth, arch.heads, arch.registers)
    mapped = {
        "cls_token": state.pop("cls_token"),
        "pos_embed": _resize_positions(state.pop("pos_embed"), model.grid),
        "register_tokens": state.pop("register_tokens", torch.zeros(1, 0, arch.dim)),
        "patch_embed.proj.weight": state.pop("patch_embed.proj.weight"),
        "patch_embed.proj.bias": state.pop("patch_embed.proj.bias"),
        "norm.weight": state.pop("norm.weight"),
        "norm.bias": state.pop("norm.bias"),
    }
    for i in range(arch.depth):
        src, dst = f"blocks.{i}.", f"blocks.{i}."
        attn_scale = state.pop(src + "ls1.gamma", torch.ones(arch.dim))
        mlp_scale = state.pop(src + "ls2.gamma", torch.ones(arch.dim))
        for name in ("norm1", "norm2", "attn.qkv"):
            for kind in ("weight", "bias"):
                mapped[f"{dst}{name}.{kind}"] = state.pop(f"{src}{name}.{kind}")
        for source, target, scale in (("attn.proj", "attn.out.0", attn_scale), ("mlp.fc2", "mlp.3", mlp_scale)):
            mapped[f"{dst}{target}.weight"] = state.pop(f"{src}{source}.weight") * scale[:, None]
            mapped[f"{dst}{target}.bias"] = state.pop(f"{src}{source}.bias") * scale
        mapped[f"{dst}mlp.0.weight"] = state.pop(f"{src}mlp.fc1.weight")
        mapped[f"{dst}mlp.0.bias"] = state.pop(f"{src}mlp.fc1.bias")
    leftover = sorted(key for key in state if not key.startswith(("mask_token", "head.")))
    if leftover:
        raise ValueError(f"checkpoint key {leftover[0]!r} is not part of a DINOv2 ViT backbone")
    model.load_state_dict(mapped)
    return model


def _resize_positions(pos_embed: Tensor, grid: int) -> Tensor:
    """(1, [1 +] g², D) -> (1, 1 + grid², D); bicubic on the patch grid, the CLS position kept (zero if absent)."""
    count, dim = pos_embed.shape[1:]
    side = math.isqrt(count)
    if side * side == count:  # no CLS position (timm's no_embed_class)
        cls_pos, patch_pos = pos_embed.new_zeros(1, 1, dim), pos_embed
    else:
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        side = math.isqrt(count - 1)
    if side != grid:
        patch_grid = rearrange(patch_pos, "1 (h w) d -> 1 d h w", h=side)
        patch_grid = F.interpolate(patch_grid.float(), size=(grid, grid), mode="bicubic", align_corners=False)
        patch_pos = rearrange(patch_grid, "1 d h w -> 1 (h w) d")
    return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)
