"""Matplotlib figures rendered to inline base64 PNG <img> tags (the HTML report needs no external file)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure_to_img(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{encoded}">'


def new_figure(width: float = 6.0, height: float = 4.0):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(alpha=0.3)
    return fig, ax


def line_plot(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str) -> str:
    """One line per name: {name: (xs, ys)}."""
    fig, ax = new_figure()
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    return figure_to_img(fig, title)


def image_grid(images, titles: list[str], title: str) -> str:
    """Show a few (C,H,W) tensors in [0,1] side by side."""
    fig, axes = plt.subplots(1, len(images), figsize=(2 * len(images), 2.3), squeeze=False)
    for ax, image, name in zip(axes[0], images, titles):
        array = image.detach().cpu().float()
        ax.imshow(array[0] if array.shape[0] == 1 else array.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    return figure_to_img(fig, title)
