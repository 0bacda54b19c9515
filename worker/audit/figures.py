"""Artifacts a person can look at: the images, the maps and a side-by-side comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.patches import Rectangle
from PIL import Image

from worker.audit.metrics.topk import topk_mask


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8, rounded to the nearest level."""
    array = np.round(image.clamp(0, 1).numpy() * 255).astype(np.uint8)
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def save_image_png(image: torch.Tensor, path: Path) -> None:
    """Save a (C, H, W) image in [0, 1] as an 8-bit gray or RGB PNG."""
    Image.fromarray(image_to_uint8(image)).save(path)


def map_to_rgb(saliency: torch.Tensor, vmax: float | None = None) -> np.ndarray:
    """Colour an (H, W) map with the 'inferno' colormap scaled to [0, vmax] (default its max)."""
    values = saliency.abs().numpy()
    top = vmax if vmax is not None else float(values.max())
    scaled = values / top if top > 0 else values
    return (colormaps["inferno"](np.clip(scaled, 0, 1))[:, :, :3] * 255).astype(np.uint8)


def save_map_png(saliency: torch.Tensor, path: Path, scale: int = 1) -> None:
    """Save an (H, W) map as a colour PNG, enlarged ``scale`` times with nearest neighbours."""
    image = Image.fromarray(map_to_rgb(saliency))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    image.save(path)


def _show_image(axis: plt.Axes, image: torch.Tensor, title: str) -> None:
    array = image_to_uint8(image)
    axis.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def _show_map(axis: plt.Axes, saliency: torch.Tensor, mask: torch.Tensor, title: str) -> None:
    axis.imshow(map_to_rgb(saliency))
    rows, cols = np.nonzero(mask.numpy())
    axis.scatter(cols, rows, s=6, facecolors="none", edgecolors="cyan", linewidths=0.6)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def save_comparison_figure(
    path: Path,
    *,
    original: torch.Tensor,
    perturbed: torch.Tensor,
    baseline: torch.Tensor,
    original_map: torch.Tensor,
    perturbed_map: torch.Tensor,
    baseline_map: torch.Tensor,
    k: int,
    report: dict,
) -> None:
    """Draw the original, attacked and random-baseline images with their maps, side by side.

    Circles mark each map's top-k pixels, so a reader sees which of them moved, and a green
    rectangle marks the target box of the targeted and manipulate attacks. The perturbation
    panel shows (perturbed - original) in 8-bit levels, with +-epsilon spanning the colour scale.
    Each map is coloured on its own scale, from zero to its maximum.
    """
    epsilon = float(report["params"]["epsilon"])
    fig, axes = plt.subplots(2, 4, figsize=(12, 7.2))
    label = report["label"]
    base = report["baseline"]
    metrics = report["metrics"]
    _show_image(
        axes[0, 0],
        original,
        f"original: {label['original_name']} ({label['original_confidence']:.2f})",
    )
    _show_image(
        axes[0, 1],
        perturbed,
        f"{report['attack']['name']} attack: {label['perturbed_name']} "
        f"({label['perturbed_confidence']:.2f})",
    )
    _show_image(
        axes[0, 2],
        baseline,
        f"random baseline: {base['label']['perturbed_name']} "
        f"({base['label']['perturbed_confidence']:.2f})",
    )
    delta = (perturbed - original).mean(0).numpy() * 255
    delta_image = axes[0, 3].imshow(delta, cmap="coolwarm", vmin=-epsilon * 255, vmax=epsilon * 255)
    linf = report["perturbation"]["linf"] * 255
    axes[0, 3].set_title(
        f"attack perturbation, max |Δ| {linf:.1f}/255\n(red brighter, blue darker)", fontsize=8
    )
    axes[0, 3].axis("off")
    colorbar = fig.colorbar(delta_image, ax=axes[0, 3], fraction=0.046, pad=0.02)
    colorbar.set_label("Δ in 8-bit levels", fontsize=7)
    colorbar.ax.tick_params(labelsize=7)

    masks = [topk_mask(m[None], k)[0] for m in (original_map, perturbed_map, baseline_map)]
    _show_map(axes[1, 0], original_map, masks[0], f"original map (top {k} circled)")
    _show_map(
        axes[1, 1],
        perturbed_map,
        masks[1],
        f"attacked map: top-k ∩ {metrics['topk_intersection']:.2f}, ρ {metrics['spearman']:.2f}",
    )
    _show_map(
        axes[1, 2],
        baseline_map,
        masks[2],
        f"random map: top-k ∩ {base['metrics']['topk_intersection']:.2f}, "
        f"ρ {base['metrics']['spearman']:.2f}",
    )
    box = report["params"].get("target_box")
    if box:
        top, left, bottom, right = box
        for axis in axes[1, :3]:
            axis.add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5),
                    right - left,
                    bottom - top,
                    fill=False,
                    edgecolor="lime",
                    linewidth=1.2,
                )
            )
    moved = masks[0] & ~masks[1]
    overlay = np.zeros((*original_map.shape, 3), dtype=np.uint8)
    overlay[masks[0].numpy() & masks[1].numpy()] = (200, 200, 200)
    overlay[moved.numpy()] = (220, 40, 40)
    overlay[(masks[1] & ~masks[0]).numpy()] = (40, 120, 220)
    axes[1, 3].imshow(overlay)
    axes[1, 3].set_title("top-k: kept (grey), lost (red), new (blue)", fontsize=8)
    axes[1, 3].axis("off")
    fig.suptitle(
        f"verdict: {report['verdict']} — {report['verdict_reason']}", fontsize=9, wrap=True
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=2.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)
