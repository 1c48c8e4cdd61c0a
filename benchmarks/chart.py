"""benchmarks/results.png: every ratio of the run beside its target, in one picture.

Left: Ergon ÷ floor per step (lower is better; the target is at most 1.5x). Right: everything
oriented so that higher is better for Ergon — DBOS ÷ Ergon costs, Ergon ÷ DBOS throughputs,
and the absolute targets as headroom (50 ms ÷ resume time, 150 MB ÷ operator RSS). A bar is green
when its target is met, red when not, grey when it has none (shown for context); the black
tick is the target.

Below them, when the run measured workload 6, the scaling curves: one plot per kind of curve
(steps/s against flows in flight in one process, flows/s against worker processes), a solid line
per store and, dashed in the same colour, that store's sequential-write limit; a black bar marks
a target of the issue's (64 flows at 5x the limit), met or missed as its legend says.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import Curve, Ratio

COLOURS = {"SQLite": "#1565c0", "Postgres": "#2e7d32", "Redis": "#c62828", "memory": "#757575"}
CURVES_HEIGHT = 4.6


def render(ratios: list[Ratio], path: Path, title: str, curves: Sequence[Curve] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors = [r for r in ratios if r.lower_is_better]
    others = [r for r in ratios if not r.lower_is_better]
    rows = max(len(floors), len(others), 1)
    bars_height = 1.2 + 0.42 * rows
    panels = list(dict.fromkeys(c.panel for c in curves))
    fig = plt.figure(figsize=(15, bars_height + (CURVES_HEIGHT if panels else 0)))
    grid = fig.add_gridspec(
        2 if panels else 1, 1, height_ratios=[bars_height, CURVES_HEIGHT] if panels else [1]
    )
    top = grid[0].subgridspec(1, 2, width_ratios=[1, 1.6])
    _panel(fig.add_subplot(top[0]), floors, "Ergon ÷ floor per step (lower is better)", log=False)
    _panel(
        fig.add_subplot(top[1]), others, "Ergon's advantage (higher is better, log scale)", log=True
    )
    if panels:
        bottom = grid[1].subgridspec(1, len(panels))
        for i, panel in enumerate(panels):
            _curves(fig.add_subplot(bottom[i]), [c for c in curves if c.panel == panel])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the curves' legends sit below them
    plt.close(fig)


def _curves(ax: object, curves: list[Curve]) -> None:
    """One plot of scaling curves, log-log, each store's limit a dashed line of its colour."""
    from matplotlib.axes import Axes
    from matplotlib.ticker import FuncFormatter, LogLocator

    assert isinstance(ax, Axes)
    first = curves[0]
    ax.set_title(f"Scaling: {first.panel} (dashed: sequential-write limit)", fontsize=10)
    xs = sorted({x for c in curves for x, _ in c.points})
    targets: list[str] = []  # named in the legend: two stores' targets may lie close together
    for curve in curves:
        colour = COLOURS.get(curve.store, "#6a1b9a")
        ax.plot(
            [x for x, _ in curve.points], [y for _, y in curve.points],
            marker="o", color=colour, label=curve.store,
        )  # fmt: skip
        for x, y in curve.points:
            ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if curve.limit:
            ax.axhline(curve.limit, color=colour, linestyle="--", lw=1, alpha=0.8)
        if curve.target:
            x, y = curve.target
            reached = dict(curve.points).get(x, 0.0) >= y
            ax.plot([x], [y], marker="_", markersize=18, mew=2.5, color="black")
            targets.append(
                f"{curve.store} {_multiple(y, curve.limit)}at {x} {'met' if reached else 'MISSED'}"
            )
    if targets:
        ax.plot([], [], marker="_", markersize=12, mew=2.5, ls="none", color="black",
                label="target: " + "; ".join(targets))  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.margins(x=0.12)
    ax.set_xlabel(first.x_label, fontsize=9)
    ax.set_ylabel(first.y_label, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(curves), 4),
        frameon=False,
    )  # fmt: skip


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


def _multiple(value: float, limit: float | None) -> str:
    return f"≥ {value / limit:.3g}x limit " if limit else ""
