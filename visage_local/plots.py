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


def plot_runs_1d(runs: list[tuple[str, dict]], title: str, path: Path) -> None:
    """Several 1D landscapes on one figure: ASR on top; the displacement's norm ratio and
    cosine (how closely requantised weights follow the direction) below."""
    fig, (top, ratio_ax, cos_ax) = plt.subplots(
        3, 1, figsize=(6.4, 7.2), dpi=110, sharex=True, height_ratios=[2, 1, 1]
    )
    for label, summary in runs:
        rows = sorted((r for r in summary["points"] if r["on_grid"]), key=lambda r: r["alpha"])
        alphas = [r["alpha"] for r in rows]
        visage = summary.get("visage")
        name = label if visage is None else f"{label} (VISAGE {visage:.1f})"
        top.plot(alphas, [r["asr"] for r in rows], marker="o", markersize=3, label=name)
        moved = [(r["alpha"], r["displacement"]["all"]) for r in rows if "displacement" in r]
        moved = [(a, d) for a, d in moved if d["ratio"] is not None]
        ratio_ax.plot(
            [a for a, _ in moved], [d["ratio"] for _, d in moved], marker=".", label=label
        )
        cos_ax.plot([a for a, _ in moved], [d["cosine"] for _, d in moved], marker=".", label=label)
    top.set_ylabel("ASR (%)")
    top.set_ylim(-3, 103)
    top.legend(fontsize=8)
    top.set_title(title, fontsize=9)
    ratio_ax.axhspan(0.8, 1.25, color="#2ecc71", alpha=0.12)
    ratio_ax.set_ylabel("norm ratio")
    cos_ax.axhline(0.9, color="#c0392b", linestyle=":", linewidth=1)
    cos_ax.set_ylabel("cosine")
    cos_ax.set_xlabel("alpha")
    for ax in (top, ratio_ax, cos_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
