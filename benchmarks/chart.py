"""benchmarks/results.png: every ratio of the run beside its target, in one picture.

Left: Ergon ÷ floor per step (lower is better; the target is at most 1.5x). Right: everything
oriented so that higher is better for Ergon — DBOS ÷ Ergon costs, Ergon ÷ DBOS throughputs,
and the absolute targets as headroom (50 ms ÷ resume time, 150 MB ÷ operator RSS). A bar is green
when its target is met, red when not, grey when it has none (shown for context); the black
tick is the target.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import Ratio


def render(ratios: list[Ratio], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors = [r for r in ratios if r.lower_is_better]
    others = [r for r in ratios if not r.lower_is_better]
    rows = max(len(floors), len(others), 1)
    fig, axes = plt.subplots(
        1, 2, figsize=(15, 1.2 + 0.42 * rows), gridspec_kw={"width_ratios": [1, 1.6]}
    )
    _panel(axes[0], floors, "Ergon ÷ floor per step (lower is better)", log=False)
    _panel(axes[1], others, "Ergon's advantage (higher is better, log scale)", log=True)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: object, ratios: list[Ratio], title: str, *, log: bool) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    ax.set_title(title, fontsize=10)
    if not ratios:
        ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center")
        ax.set_axis_off()
        return
    labels = [r.label for r in ratios][::-1]
    values = [r.value for r in ratios][::-1]
    colors = [{True: "#2e7d32", False: "#c62828", None: "#78909c"}[r.met] for r in ratios][::-1]
    positions = list(range(len(ratios)))
    ax.barh(positions, values, color=colors, height=0.6)
    for pos, ratio in zip(positions, ratios[::-1], strict=True):
        if ratio.target is not None:
            ax.plot([ratio.target, ratio.target], [pos - 0.4, pos + 0.4], color="black", lw=2)
        ax.text(ratio.value, pos, f" {ratio.value:.2f}x", va="center", fontsize=8)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(left=min(0.5, *values) * 0.8, right=max(*values, 10) * 2.5)
    else:
        ax.set_xlim(0, max(2.0, *values) * 1.25)
    ax.grid(axis="x", alpha=0.3)
