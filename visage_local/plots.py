"""Figures of a landscape: ASR against alpha in 1D; a heat map and a 3D surface in 2D."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_1d(alphas: list[float], asr: list[float], title: str, path: Path) -> None:
    """ASR (%) against alpha, with the origin marked."""
    order = np.argsort(alphas)
    x = np.asarray(alphas)[order]
    y = np.asarray(asr)[order]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.6, color="#c0392b")
    ax.axvline(0.0, color="#555", linestyle=":", linewidth=1)
    if 0.0 in alphas:
        origin = asr[alphas.index(0.0)]
        ax.plot([0.0], [origin], marker="*", markersize=12, color="#2c3e50", label="origin")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("alpha (perturbation along direction 1)")
    ax.set_ylabel("ASR (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_2d(axis: list[float], grid_asr: np.ndarray, title: str, path: Path) -> None:
    """A heat map with contours and a 3D surface of ASR over (alpha, beta).

    ``grid_asr[j, i]`` is the ASR at alpha = axis[i], beta = axis[j] (NaN where missing).
    """
    a, b = np.meshgrid(axis, axis)
    fig = plt.figure(figsize=(10, 4.2), dpi=110)
    ax1 = fig.add_subplot(1, 2, 1)
    mesh = ax1.pcolormesh(a, b, grid_asr, cmap="RdYlGn_r", vmin=0, vmax=100, shading="nearest")
    if np.isfinite(grid_asr).sum() >= 4 and len(axis) >= 3:
        contours = ax1.contour(a, b, grid_asr, levels=[20, 40, 60, 80], colors="k", linewidths=0.6)
        ax1.clabel(contours, fontsize=7)
    ax1.plot([0], [0], marker="*", markersize=11, color="#2c3e50")
    ax1.set_xlabel("alpha")
    ax1.set_ylabel("beta")
    fig.colorbar(mesh, ax=ax1, label="ASR (%)")
    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    ax2.plot_surface(a, b, np.nan_to_num(grid_asr, nan=0.0), cmap="RdYlGn_r", vmin=0, vmax=100)
    ax2.set_xlabel("alpha")
    ax2.set_ylabel("beta")
    ax2.set_zlabel("ASR (%)")
    ax2.set_zlim(0, 100)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
