"""Figures of a landscape: ASR against alpha in 1D; a heat map and a 3D surface in 2D."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from visage_local.errors import VisageError
from visage_local.record import RunSummary

SERIES_STYLES = {
    "harmful compliance": dict(color="#8e44ad", linestyle="--"),
    "incoherent answers": dict(color="#7f8c8d", linestyle=":"),
    "benign prompts refused": dict(color="#2980b9", linestyle="-."),
}


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn
    (it takes half a second, which every command would pay at start). A matplotlib that
    cannot be imported is one line: on one GPU machine's image its font module failed once
    llama.cpp's CUDA libraries were loaded (docs/BENCHMARKS.md), after the run's files
    were written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as error:  # any failure of the installed package, named in the line
        raise VisageError(
            f"the plot was not drawn: matplotlib could not be imported "
            f"({type(error).__name__}: {str(error)[:200]}); the run's other files are written"
        ) from error
    return plt


def plot_1d(
    alphas: list[float],
    asr: list[float],
    title: str,
    path: Path,
    extra: dict[str, list[float | None]] | None = None,
    asr_band: list[tuple[float, float]] | None = None,
    xlabel: str = "alpha (perturbation along direction 1)",
) -> None:
    """ASR (%) against alpha, with the origin marked and, when given, its 95% interval as a
    band; ``extra`` adds other % series (harmful compliance, incoherent answers, benign
    refusals) on the same axes."""
    order = np.argsort(alphas)
    x = np.asarray(alphas)[order]
    y = np.asarray(asr)[order]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    if asr_band is not None:
        band = np.asarray(asr_band, dtype=float)[order]
        ax.fill_between(x, band[:, 0], band[:, 1], color="#c0392b", alpha=0.15, label="95% CI")
    ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.6, color="#c0392b", label="ASR")
    for label, values in (extra or {}).items():
        series = np.array([np.nan if v is None else v for v in values], dtype=float)[order]
        ax.plot(x, series, marker=".", linewidth=1.2, label=label, **SERIES_STYLES.get(label, {}))
    ax.axvline(0.0, color="#555", linestyle=":", linewidth=1)
    if 0.0 in alphas:
        origin = asr[alphas.index(0.0)]
        ax.plot([0.0], [origin], marker="*", markersize=12, color="#2c3e50", label="origin")
    ax.legend(loc="best", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of prompts")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_2d(
    alphas: list[float],
    betas: list[float],
    grid_asr: np.ndarray,
    title: str,
    path: Path,
    outline: list[tuple[float, float]] | None = None,
) -> None:
    """ASR over (alpha, beta) three ways: a heat map with the basin edges found along rays
    (``outline``), filled contours, and a 3D surface (the paper's 2D figure).

    ``grid_asr[j, i]`` is the ASR at alpha = alphas[i], beta = betas[j] (NaN where missing).
    """
    a, b = np.meshgrid(alphas, betas)
    plt = _pyplot()
    fig = plt.figure(figsize=(15, 4.4), dpi=110)
    ax1 = fig.add_subplot(1, 3, 1)
    mesh = ax1.pcolormesh(a, b, grid_asr, cmap="RdYlGn_r", vmin=0, vmax=100, shading="nearest")
    if np.isfinite(grid_asr).sum() >= 4 and min(len(alphas), len(betas)) >= 3:
        contours = ax1.contour(a, b, grid_asr, levels=[20, 40, 60, 80], colors="k", linewidths=0.6)
        ax1.clabel(contours, fontsize=7)
    ax1.plot([0], [0], marker="*", markersize=11, color="#2c3e50")
    if outline:
        xs, ys = zip(*outline, strict=True)
        ax1.plot([*xs, xs[0]], [*ys, ys[0]], marker="D", markersize=4, color="#2c3e50",
                 linewidth=1, label="basin edge")  # fmt: skip
        ax1.legend(fontsize=7, loc="upper right")
    ax1.set_xlabel("alpha")
    ax1.set_ylabel("beta")
    fig.colorbar(mesh, ax=ax1, label="ASR (%)")
    ax2 = fig.add_subplot(1, 3, 2)
    if np.isfinite(grid_asr).all() and min(len(alphas), len(betas)) >= 2:
        levels = np.linspace(0, 100, 11)
        filled = ax2.contourf(a, b, grid_asr, levels=levels, cmap="RdYlGn_r")
        fig.colorbar(filled, ax=ax2, label="ASR (%)")
    else:
        ax2.text(0.5, 0.5, "contours need every grid point", ha="center", transform=ax2.transAxes)
    ax2.plot([0], [0], marker="*", markersize=11, color="#2c3e50")
    ax2.set_xlabel("alpha")
    ax2.set_ylabel("beta")
    ax3 = fig.add_subplot(1, 3, 3, projection="3d")
    ax3.plot_surface(a, b, np.nan_to_num(grid_asr, nan=0.0), cmap="RdYlGn_r", vmin=0, vmax=100)
    ax3.set_xlabel("alpha")
    ax3.set_ylabel("beta")
    ax3.set_zlabel("ASR (%)")
    ax3.set_zlim(0, 100)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_runs_1d(runs: list[tuple[str, RunSummary]], title: str, path: Path) -> None:
    """Several 1D landscapes on one figure: ASR on top; the displacement's norm ratio and
    cosine (how closely requantised weights follow the direction) below."""
    plt = _pyplot()
    fig, (top, ratio_ax, cos_ax) = plt.subplots(
        3, 1, figsize=(6.4, 7.2), dpi=110, sharex=True, height_ratios=[2, 1, 1]
    )
    for label, summary in runs:
        rows = sorted(summary.grid_points, key=lambda r: r.alpha)
        alphas = [r.alpha for r in rows]
        visage = summary.visage
        name = label if visage is None else f"{label} (VISAGE {visage:.1f})"
        top.plot(alphas, [r.asr for r in rows], marker="o", markersize=3, label=name)
        moved = [(r.alpha, r.displacement["all"]) for r in rows if r.displacement]
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
    cos_ax.set_xlabel("t" if all(s.interpolation for _, s in runs) else "alpha")
    for ax in (top, ratio_ax, cos_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_conditions_1d(runs: list[tuple[str, RunSummary]], title: str, path: Path) -> None:
    """Landscapes of several conditions on one grid: ASR (solid) and harmful compliance
    (dashed, when measured) per condition, VISAGE in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for (label, summary), color in zip(runs, colors, strict=False):
        rows = sorted(summary.grid_points, key=lambda r: r.alpha)
        alphas = [r.alpha for r in rows]
        visage = summary.visage
        name = label if visage is None else f"{label} (VISAGE {visage:.1f})"
        ax.plot(alphas, [r.asr for r in rows], marker="o", markersize=3, color=color, label=name)
        compliance = [r.harmful_compliance for r in rows]
        if all(v is not None for v in compliance):
            ax.plot(alphas, compliance, linestyle="--", linewidth=1, color=color)
    ax.axvline(0.0, color="#555", linestyle=":", linewidth=1)
    ax.set_xlabel("alpha")
    ax.set_ylabel("ASR (solid), harmful compliance (dashed), %")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_training_curve(losses: list[float], title: str, path: Path) -> None:
    """Training loss per step, with a 10-step moving average."""
    steps = np.arange(len(losses))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(steps, losses, color="#bdc3c7", linewidth=1, label="loss per step")
    if len(losses) >= 10:
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(steps[9:], smooth, color="#2c3e50", linewidth=1.6, label="10-step mean")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy on answer tokens")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_capability_1d(
    alphas: list[float],
    asr: list[float],
    capability: dict[str, list[float | None]],
    title: str,
    path: Path,
    xlabel: str = "alpha (direction 1)",
) -> None:
    """Safety and capability on one figure: ASR and MCQ accuracy (%) on the left axis,
    KL from the origin (nats) on the right."""
    order = np.argsort(alphas)
    x = np.asarray(alphas)[order]

    def series(values):
        return np.array([np.nan if v is None else v for v in values], dtype=float)[order]

    plt = _pyplot()
    fig, left = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    left.plot(x, series(asr), marker="o", markersize=3.5, color="#c0392b", label="ASR (%)")
    left.plot(x, series(capability["mcq_accuracy"]), marker="s", markersize=3.5,
              color="#27ae60", label="MCQ accuracy (%)")  # fmt: skip
    left.axhline(25, color="#27ae60", linewidth=0.8, linestyle=":", label="MCQ chance (25%)")
    left.set_ylim(-3, 103)
    left.set_xlabel(xlabel)
    left.set_ylabel("%")
    left.axvline(0, color="#7f8c8d", linewidth=0.8, linestyle=":")
    right = left.twinx()
    right.plot(x, series(capability["kl"]), marker="^", markersize=3.5, color="#2980b9",
               linestyle="--", label="KL from origin (nats)")  # fmt: skip
    right.set_ylabel("KL from origin (nats)", color="#2980b9")
    right.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, fontsize=7, loc="center right")
    left.set_title(title, fontsize=9)
    left.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_capability_2d(
    alphas: list[float],
    betas: list[float],
    surfaces: dict[str, np.ndarray],
    title: str,
    path: Path,
) -> None:
    """Side-by-side 3D surfaces over (alpha, beta), one per figure in ``surfaces``
    (label -> grid with ``grid[j, i]`` at alpha = alphas[i], beta = betas[j])."""
    a, b = np.meshgrid(alphas, betas)
    plt = _pyplot()
    fig = plt.figure(figsize=(4.2 * len(surfaces), 4.2), dpi=110)
    for k, (label, grid) in enumerate(surfaces.items(), start=1):
        ax = fig.add_subplot(1, len(surfaces), k, projection="3d")
        ax.plot_surface(a, b, np.nan_to_num(grid, nan=0.0), cmap="viridis")
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_screen(
    names: list[str],
    asr: list[float | None],
    asr_ci: list[list[float] | None],
    visage: list[float | None] | None,
    visage_ci: list[list[float] | None] | None,
    path: Path,
) -> None:
    """A screen's models, top to bottom in rank order: origin ASR with its 95% interval
    and, when the landscapes were measured, VISAGE with its interval, as horizontal bars."""
    panels = [("origin ASR (%)", asr, asr_ci, "#c0392b")]
    if visage is not None and visage_ci is not None:
        panels.append(("VISAGE", visage, visage_ci, "#1e8449"))
    height = 1.2 + 0.38 * len(names)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.4, height), dpi=110,
                             sharey=True, squeeze=False)  # fmt: skip
    y = np.arange(len(names))[::-1]
    for ax, (label, values, intervals, color) in zip(axes[0], panels, strict=True):
        x = np.array([np.nan if v is None else v for v in values], dtype=float)
        low = [
            v - ci[0] if v is not None and ci else 0.0
            for v, ci in zip(values, intervals, strict=True)
        ]
        high = [
            ci[1] - v if v is not None and ci else 0.0
            for v, ci in zip(values, intervals, strict=True)
        ]
        ax.barh(y, np.nan_to_num(x), xerr=[low, high], color=color, alpha=0.75,
                error_kw=dict(ecolor="#333", capsize=3, linewidth=1))  # fmt: skip
        for yi, v in zip(y, values, strict=True):
            ax.text(2, yi, "not measured" if v is None else f"{v:.1f}", va="center", fontsize=7)
        ax.set_xlim(0, 100)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [n if len(n) <= 40 else n[:37] + "..." for n in names], fontsize=7)
    fig.suptitle("screen: models in rank order (bars: 95% intervals)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


Figure = tuple[float | None, list[float] | None]  # a value and its 95% interval


def plot_ladder(
    names: list[str],
    bits: list[float],
    asr: list[Figure],
    visage: list[Figure],
    kl: list[Figure],
    path: Path,
) -> None:
    """A quantisation ladder against bits per weight: origin ASR and (where measured) VISAGE
    on the left axis, KL from the reference on the right, each with its 95% interval."""
    plt = _pyplot()
    fig, left = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    right = left.twinx()
    series = [
        (left, "origin ASR (%)", asr, "#c0392b", "o"),
        (right, "KL (nats)", kl, "#2e86c1", "s"),
    ]
    if any(v is not None for v, _ in visage):
        series.insert(1, (left, "VISAGE", visage, "#1e8449", "^"))
    for ax, label, figures, color, marker in series:
        points = [(b, v, ci) for b, (v, ci) in zip(bits, figures, strict=True) if v is not None]
        if not points:
            continue
        x = [b for b, _, _ in points]
        y = [v for _, v, _ in points]
        err = [[v - ci[0] if ci else 0 for _, v, ci in points],
               [ci[1] - v if ci else 0 for _, v, ci in points]]  # fmt: skip
        ax.errorbar(x, y, yerr=err, color=color, marker=marker, capsize=3, label=label)
    for b, name in zip(bits, names, strict=True):
        left.annotate(name[:14], (b, 0), fontsize=6, rotation=90, va="bottom", ha="center",
                      xytext=(0, 3), textcoords="offset points", color="#555")  # fmt: skip
    left.set_ylim(0, 100)
    left.set_xlabel("bits per weight")
    left.set_ylabel("ASR, VISAGE")
    right.set_ylabel("KL from the reference (nats)")
    right.set_ylim(bottom=0)
    left.invert_xaxis()  # down the ladder: the most bits on the left
    handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in (left, right) for lab in ax.get_legend_handles_labels()[1]]
    left.legend(handles, labels, fontsize=7, loc="upper left")
    left.grid(alpha=0.3)
    fig.suptitle("the quantisation ladder (bars: 95% intervals)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
