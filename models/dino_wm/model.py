"""DINO-WM-style world model: a frozen pretrained ViT's patch features, and a ViT predictor over them.

Zhou, Pan, LeCun, Pinto, arXiv 2411.04983 (REFERENCE.md "Baselines"). Each frame is encoded
by a frozen encoder into its patch tokens (N = patches per frame: 256 for DINOv2 ViT-S/14 at
224×224, 384 wide). A ViT predictor attends over all patch tokens of the history with a
frame-causal mask (tokens of frame t see frames ≤ t); the action block is embedded and
concatenated to every patch of its frame, then projected to the predictor's width. Training
is teacher-forced L2 on the next frame's features; planning is the shared latent CEM.

The frozen encoder comes from one of two sources, recorded by ``describe()["encoder"]``:

* DINOv2 (Oquab et al., 2024) weights from a local file ``encoder_path`` — a torch-hub or timm
  state dict, ``.pth``/``.pt`` or ``.safetensors``. The architecture is read from the
  checkpoint (ViT-S/14: 12 layers, width 384, 6 heads, patch 14, CLS and optional register
  tokens, LayerScale); frames are ImageNet-normalised inside ``encode``.
* Without weights, the same architecture pretrained here in ``prepare(dataset)`` as a masked
  autoencoder on the task's own frames (``selfsup-mae-<steps>``): 75% of patches masked, a
  small transformer decoder reconstructs their per-patch-normalised pixels (He et al., 2022),
  then the decoder is dropped and the encoder frozen. No augmentation: flips and crops would
  change what the frames of a navigation task mean.

Proprioception is not used: the WorldModel contract gives ``encode`` pixels only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from models.blocks.vit import Block, ViTEncoder, frame_causal_mask
from models.lewm.model import IMAGENET_MEAN, IMAGENET_STD
from models.presets import resolve_config
from models.world_model import WorldModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DinoWMConfig:
    """Encoder source and sizes, self-supervised fallback recipe, predictor sizes."""

    image_size: int = 224
    action_dim: int = 10
    # Frozen encoder. With encoder_path, the architecture is read from the checkpoint and the
    # encoder_{dim,depth,heads} below apply only to the self-supervised fallback.
    encoder_path: str | None = None  # local DINOv2 checkpoint (torch-hub or timm layout); None: pretrain here
    encoder_image_size: int | None = 224  # frames are resized to this: (size / patch)² tokens; None: image_size
    patch_size: int = 14  # DINOv2 ViT-S/14 (a checkpoint's own patch size wins)
    encoder_dim: int = 384  # DINOv2 ViT-S
    encoder_depth: int = 12  # DINOv2 ViT-S
    encoder_heads: int = 6  # DINOv2 ViT-S (width / 64)
    # Self-supervised fallback: masked autoencoder (He et al., 2022) on the task's frames.
    selfsup_steps: int = 300  # "a few hundred steps" (wmbench)
    selfsup_batch: int = 32  # windows per step; every frame of a window is used
    selfsup_lr: float = 1e-3  # AdamW, constant (wmbench: short schedule)
    selfsup_weight_decay: float = 0.05  # MAE
    mask_ratio: float = 0.75  # MAE
    decoder_dim: int = 256  # MAE's decoder is narrow and shallow (512 × 8); smaller for a short run
    decoder_depth: int = 2
    decoder_heads: int = 8
    selfsup_seed: int = 0
    # Predictor: ViT with frame-causal attention over every patch token of the history. Sizes are
    # DINO-WM's released predictor config (not in REFERENCE.md).
    action_embed_dim: int = 10  # DINO-WM's action embedding width
    predictor_dim: int = 384  # the encoder's width (DINO-WM predicts in feature space)
    predictor_depth: int = 6  # DINO-WM
    predictor_heads: int = 16  # DINO-WM
    predictor_dim_head: int = 64  # DINO-WM
    predictor_mlp_dim: int = 2048  # DINO-WM
    predictor_dropout: float = 0.1  # as LeWM's predictor (REFERENCE.md)
    max_frames: int = 16  # learned frame positions for windows up to this long
    history: int = 3  # DINO-WM plans from 3 frames on Push-T


PRESETS: dict[str, DinoWMConfig] = {
    "tiny": DinoWMConfig(
        encoder_image_size=None,
        patch_size=8,
        encoder_dim=64,
        encoder_depth=2,
        encoder_heads=2,
        selfsup_steps=40,
        selfsup_batch=8,
        decoder_dim=64,
        decoder_depth=1,
        decoder_heads=2,
        action_embed_dim=8,
        predictor_dim=64,
        predictor_depth=2,
        predictor_heads=4,
        predictor_dim_head=16,
        predictor_mlp_dim=128,
        history=2,
    ),
    "paper": DinoWMConfig(),
}

# --- DINOv2's ViT ---------------------------------------------------------------------------


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


# --- the self-supervised fallback: a masked autoencoder --------------------------------------


class MAEDecoder(nn.Module):
    """MAE's decoder: visible tokens plus mask tokens at every position -> pixels of each patch."""

    def __init__(self, encoder: DinoV2ViT, patch_size: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        num_patches = encoder.grid**2
        self.embed = nn.Linear(encoder.cls_token.shape[-1], dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_size * patch_size * 3)

    def forward(self, visible: Tensor, keep: Tensor) -> Tensor:
        """visible tokens (B, P', D_enc) at patch indices keep (B, P') -> patch pixels (B, P, p·p·3)."""
        batch, num_patches = visible.shape[0], self.pos_embed.shape[1]
        tokens = self.mask_token.expand(batch, num_patches, -1).clone()  # (B, P, D)
        tokens.scatter_(1, repeat(keep, "b p -> b p d", d=tokens.shape[-1]), self.embed(visible))
        x = tokens + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def pretrain_mae(
    encoder: DinoV2ViT,
    dataset: torch.utils.data.Dataset,
    config: DinoWMConfig,
    normalise: Callable[[Tensor], Tensor],
) -> list[float]:
    """Masked-autoencoder pretraining of ``encoder`` on the dataset's frames; returns the loss per step."""
    device = encoder.cls_token.device
    patch = encoder.patch_embed.proj.kernel_size[0]
    decoder = MAEDecoder(encoder, patch, config.decoder_dim, config.decoder_depth, config.decoder_heads).to(device)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.selfsup_lr, weight_decay=config.selfsup_weight_decay, betas=(0.9, 0.95)
    )  # MAE's betas
    generator = torch.Generator().manual_seed(config.selfsup_seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.selfsup_batch, shuffle=True, drop_last=False, generator=generator
    )
    encoder.requires_grad_(True).train()
    num_patches = encoder.grid**2
    visible = max(1, round(num_patches * (1 - config.mask_ratio)))
    losses: list[float] = []
    while len(losses) < config.selfsup_steps:
        for batch in loader:
            images = normalise(rearrange(batch["pixels"].to(device), "b t c h w -> (b t) c h w"))  # (B·T, 3, S, S)
            noise = torch.rand(images.shape[0], num_patches, generator=generator).to(device)
            order = noise.argsort(dim=1)
            keep, masked = order[:, :visible], order[:, visible:]  # (B·T, P'), (B·T, P − P')
            reconstructed = decoder(encoder(images, keep), keep)  # (B·T, P, p·p·3)
            target = rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
            error = (reconstructed - target).square().mean(-1)  # (B·T, P)
            loss = torch.gather(error, 1, masked).mean()  # on masked patches only (MAE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) >= config.selfsup_steps:
                break
    optimizer.zero_grad(set_to_none=True)  # no stale gradient may reach the frozen encoder later
    encoder.requires_grad_(False).eval()
    log.info("MAE pretraining: %d steps, loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    return losses


# --- the world model -----------------------------------------------------------------------------


class FrameCausalPredictor(nn.Module):
    """ViT over the history's patch tokens, each frame attending to itself and earlier frames."""

    def __init__(self, config: DinoWMConfig, latent_dim: int, tokens_per_frame: int) -> None:
        super().__init__()
        c = config
        self.action_embed = nn.Linear(c.action_dim, c.action_embed_dim)  # DINO-WM: a 1×1 Conv1d, i.e. a Linear
        self.project_in = nn.Linear(latent_dim + c.action_embed_dim, c.predictor_dim)
        self.patch_pos = nn.Parameter(torch.randn(1, 1, tokens_per_frame, c.predictor_dim) * 0.02)
        self.frame_pos = nn.Parameter(torch.randn(1, c.max_frames, 1, c.predictor_dim) * 0.02)
        width, heads, mlp_dim, dim_head = c.predictor_dim, c.predictor_heads, c.predictor_mlp_dim, c.predictor_dim_head
        self.blocks = nn.ModuleList(
            [Block(width, heads, mlp_dim, c.predictor_dropout, dim_head) for _ in range(c.predictor_depth)]
        )
        self.norm = nn.LayerNorm(c.predictor_dim)
        self.project_out = nn.Linear(c.predictor_dim, latent_dim)
        self.max_frames = c.max_frames

    def forward(self, latents: Tensor, actions: Tensor) -> Tensor:
        """latents (B, T, N, D), actions (B, T, A) -> predicted next latents (B, T, N, D)."""
        frames, tokens = latents.shape[1:3]
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames given to a predictor built for max_frames={self.max_frames}")
        action_tokens = repeat(self.action_embed(actions), "b t e -> b t n e", n=tokens)  # (B, T, N, E)
        x = self.project_in(torch.cat([latents, action_tokens], dim=-1))  # (B, T, N, W)
        x = x + self.patch_pos + self.frame_pos[:, :frames]
        x = rearrange(x, "b t n w -> b (t n) w")
        mask = frame_causal_mask(frames, tokens, device=x.device)  # (T·N, T·N)
        for block in self.blocks:
            x = block(x, mask)
        x = rearrange(self.norm(x), "b (t n) w -> b t n w", t=frames)
        return self.project_out(x)


class DinoWM(WorldModel):
    """Frozen patch encoder + frame-causal ViT predictor, trained by teacher-forced L2."""

    def __init__(self, config: DinoWMConfig) -> None:
        super().__init__()
        self.config = config
        self.history = config.history
        if config.encoder_path is not None:
            state = to_hub_layout(read_checkpoint(config.encoder_path))
            arch = DinoV2Architecture.of(state)
            size = self._encoder_input_size(arch.patch_size)
            self.encoder = load_dinov2(state, size)
            self.encoder_source = (
                f"dinov2:{Path(config.encoder_path).name} ({arch.depth}×{arch.dim}, patch {arch.patch_size}, "
                f"{arch.registers} registers)"
            )
        else:
            size = self._encoder_input_size(config.patch_size)
            self.encoder = DinoV2ViT(
                size, config.patch_size, config.encoder_dim, config.encoder_depth, config.encoder_heads
            )
            self.encoder_source = "untrained"
        self.encoder.requires_grad_(False).eval()
        self.encoder_image_size = size
        self.latent_dim = self.encoder.cls_token.shape[-1]
        self.predictor = FrameCausalPredictor(config, self.latent_dim, self.encoder.grid**2)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.selfsup_loss: tuple[float, float] | None = None

    def _encoder_input_size(self, patch: int) -> int:
        size = self.config.encoder_image_size
        if size is None:
            size = self.config.image_size // patch * patch
            if size == 0:
                raise ValueError(f"image_size {self.config.image_size} is smaller than the encoder's patch {patch}")
        elif size % patch:
            raise ValueError(f"encoder_image_size {size} must be a multiple of the encoder's patch size {patch}")
        return size

    @property
    def tokens_per_frame(self) -> int:
        return self.encoder.grid**2

    def train(self, mode: bool = True) -> DinoWM:
        """Switch the predictor's mode; the frozen encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def _normalise(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> resized to the encoder's input and ImageNet-normalised."""
        if images.shape[-1] != self.encoder_image_size or images.shape[-2] != self.encoder_image_size:
            size = (self.encoder_image_size, self.encoder_image_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [0, 1] -> frozen patch features (B, T, N, D)."""
        if self.encoder_source == "untrained":
            raise RuntimeError("dino_wm has no encoder weights: give encoder_path or call prepare(dataset) first")
        batch = pixels.shape[0]
        with torch.no_grad():
            tokens = self.encoder(self._normalise(rearrange(pixels, "b t c h w -> (b t) c h w")))  # (B·T, N, D)
        return rearrange(tokens, "(b t) n d -> b t n d", b=batch)

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """(B, T, N, D), (B, T, A) -> (B, T, N, D); output t predicts frame t+1 from frames ≤ t."""
        return self.predictor(z_hist, actions)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Teacher-forced L2 between predicted and encoded next-frame patch features."""
        z = self.encode(batch["pixels"])  # (B, T, N, D), no gradient
        predicted = self.predict(z[:, :-1], batch["actions"][:, :-1])
        pred_loss = F.mse_loss(predicted.float(), z[:, 1:].float())
        return {"loss": pred_loss, "pred_loss": pred_loss.detach()}

    def prepare(self, dataset: torch.utils.data.Dataset) -> None:
        """Without DINOv2 weights, pretrain the encoder here as a masked autoencoder, then freeze it."""
        if self.encoder_source != "untrained":
            return  # DINOv2 weights, or an encoder already pretrained (e.g. restored from a checkpoint)
        losses = pretrain_mae(self.encoder, dataset, self.config, self._normalise)
        self.encoder_source = f"selfsup-mae-{len(losses)}"
        self.selfsup_loss = (losses[0], losses[-1])

    def describe(self) -> dict[str, str]:
        facts = {"encoder": self.encoder_source, "encoder_frozen": "true"}
        if self.selfsup_loss is not None:
            facts["selfsup_loss"] = f"{self.selfsup_loss[0]:.4f}->{self.selfsup_loss[1]:.4f}"
        return facts

    def get_extra_state(self) -> Tensor:
        """Which encoder the saved weights are, so a restored checkpoint reports (and skips pretraining) correctly.

        Stored as the UTF-8 bytes of a JSON object in a uint8 tensor: checkpoints hold tensors only.
        """
        facts = {"encoder_source": self.encoder_source, "selfsup_loss": self.selfsup_loss}
        return torch.tensor(list(json.dumps(facts).encode()), dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        facts: dict[str, Any] = json.loads(bytes(state.tolist()).decode())
        self.encoder_source = facts["encoder_source"]
        self.selfsup_loss = tuple(facts["selfsup_loss"]) if facts["selfsup_loss"] is not None else None


def build(size: str, image_size: int, action_dim: int, history: int = 3, **overrides) -> DinoWM:
    """The zoo builder: a preset ("tiny" or "paper") at the task's image size, action width and history."""
    overrides = {"history": history, **overrides}
    config = resolve_config("dino_wm", PRESETS, size, image_size=image_size, action_dim=action_dim, **overrides)
    return DinoWM(config)
