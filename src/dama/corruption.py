"""mDPO's corrupted image I′: a random resized crop keeping 1–20% of the area (docs/paper_mapping.md §11).

The official code (luka-group/mDPO `bunny/modeling_bunny_phi.py::crop_images`, lines 2358-2364) applies torchvision's
`v2.RandomResizedCrop(size=image size, scale=(0.01, 0.2))` to each *processed* image tensor (normalised pixels) at
every forward. `crop_box` transcribes torchvision's `RandomResizedCrop.get_params` (10 tries at a random area and
aspect ratio in [3/4, 4/3], then a centre crop), drawn from a `torch.Generator`; `crop_resize` resizes the box back
with bilinear interpolation, as `v2.RandomResizedCrop` does by default. torchvision itself is not a dependency
(it is never installed on CPU).

Where the crop is drawn (`dama.config.DAMAConfig.mdpo_crop`):
- `paired` (default): one crop per pair and step, from a generator seeded by (seed, micro-batch counter, the pair's
  index in the global batch); the policy and the reference see the same I′, and two processes draw what one
  process with the doubled batch draws;
- `fresh`: as the official code, a new crop at every forward from the global RNG, so the reference sees another I′
  than the policy.

Pixel layouts: a fixed-size tensor per image (LLaVA: `pixel_values (n, C, H, W)`) is cropped as it is. Qwen2-VL and
Qwen2.5-VL flatten each image into patches (`pixel_values (Σ t·h·w, C·T·P·P)` with `image_grid_thw`); the patches
are put back into the processed image (`unpatchify`), cropped, and cut into patches again (`patchify`), which is the
official operation on the processed tensor. Resizing back to the same size keeps the grid, so the prompt's image
tokens do not change.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
import torch.nn.functional as F

CROP_SCALE = (0.01, 0.2)  # the official scale: 1–20% of the image area
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's default aspect-ratio range
CROP_MODES = ("paired", "fresh")


def crop_generator(seed: int, draw: int, pair: int) -> torch.Generator:
    """A CPU generator for pair `pair` (index in the global batch) of micro-batch `draw`: same on every rank."""
    digest = hashlib.sha256(f"dama-mdpo-crop:{seed}:{draw}:{pair}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """`(top, left, h, w)` of a random crop: torchvision `RandomResizedCrop.get_params`, transcribed."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(
            torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)
        ).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height  # fallback: a centre crop at the nearest allowed aspect ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The `box` of `image (..., C, H, W)` resized back to `(H, W)`, bilinear (torchvision's default)."""
    top, left, h, w = box
    size = image.shape[-2:]
    patch = image[..., top : top + h, left : left + w]
    lead = patch.shape[:-3]
    flat = patch.reshape(-1, *patch.shape[-3:]).float()
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *out.shape[-3:]).to(image.dtype)


def random_resized_crop(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official corruption of one image `(..., C, H, W)`: keep 1–20% of the area, resized back."""
    return crop_resize(image, crop_box(image.shape[-2], image.shape[-1], generator=generator))


def unpatchify(
    patches: torch.Tensor, grid: tuple[int, int, int], channels: int, patch: int, merge: int, temporal: int
):
    """Qwen2-VL's patches `(t·h·w, C·T·P·P)` of one image back to frames `(t·T, C, h·P, w·P)`.

    Inverse of the image processor's layout: frames reshaped to (t, T, C, h/m, m, P, w/m, m, P), permuted to
    (t, h/m, w/m, m, m, C, T, P, P) and flattened (transformers `Qwen2VLImageProcessor._preprocess`).
    """
    t, h, w = grid
    x = patches.reshape(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # inverse of (0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * temporal, channels, h * patch, w * patch)


def patchify(frames: torch.Tensor, grid: tuple[int, int, int], patch: int, merge: int, temporal: int) -> torch.Tensor:
    """Frames `(t·T, C, h·P, w·P)` to Qwen2-VL's patches `(t·h·w, C·T·P·P)` (the image processor's layout)."""
    t, h, w = grid
    channels = frames.shape[1]
    x = frames.reshape(t, temporal, channels, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, channels * temporal * patch * patch)


def _qwen_layout(model_config: Any) -> tuple[int, int, int, int]:
    vision = model_config.vision_config
    channels = getattr(vision, "in_channels", None) or getattr(vision, "in_chans", 3)
    return int(channels), int(vision.patch_size), int(vision.spatial_merge_size), int(vision.temporal_patch_size)


def corrupt_images(
    vision: dict[str, torch.Tensor], model_config: Any, generators: list[torch.Generator | None]
) -> dict[str, torch.Tensor]:
    """The vision inputs of B rows (one image per row) with every image replaced by its corrupted I′.

    Args:
        vision: the rows' vision inputs: `pixel_values` `(B, C, H, W)` (and `image_sizes`), or Qwen2-VL's
            `pixel_values` patches with `image_grid_thw` `(B, 3)`.
        model_config: the model's config (Qwen2-VL's patch layout is read from its `vision_config`).
        generators: one generator per row (`None`: the global RNG).
    """
    pixels = vision["pixel_values"]
    out = dict(vision)
    grid = vision.get("image_grid_thw")
    if grid is None:
        if pixels.dim() != 4 or pixels.size(0) != len(generators):
            raise ValueError(
                f"mDPO needs one fixed-size image per row: pixel_values has shape {tuple(pixels.shape)} for "
                f"{len(generators)} rows"
            )
        out["pixel_values"] = torch.stack([random_resized_crop(img, g) for img, g in zip(pixels, generators)])
        return out
    if grid.size(0) != len(generators):
        raise ValueError(f"mDPO needs one image per row: {grid.size(0)} images for {len(generators)} rows")
    channels, patch, merge, temporal = _qwen_layout(model_config)
    pieces, start = [], 0
    for row, g in zip(grid.tolist(), generators):
        n = row[0] * row[1] * row[2]
        frames = unpatchify(pixels[start : start + n], tuple(row), channels, patch, merge, temporal)
        box = crop_box(frames.shape[-2], frames.shape[-1], generator=g)  # one box for every frame of the image
        pieces.append(patchify(crop_resize(frames, box), tuple(row), patch, merge, temporal))
        start += n
    out["pixel_values"] = torch.cat(pieces)
    return out
