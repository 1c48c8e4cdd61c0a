"""What a workload hands to RESULTS.md and the chart: markdown lines and named ratios."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ratio:
    """One bar of the chart: a ratio and the target it is held to.

    `value` is oriented so that higher is better for Ergon (DBOS ÷ Ergon for costs, Ergon ÷ DBOS
    for throughputs), except floor ratios (`lower_is_better`), which are Ergon ÷ floor.
    """

    label: str
    value: float
    target: float | None
    lower_is_better: bool = False

    @property
    def met(self) -> bool | None:
        """None for a ratio shown for context, with no target of the issue's to meet."""
        if self.target is None:
            return None
        return self.value <= self.target if self.lower_is_better else self.value >= self.target


@dataclass
class Curve:
    """One line of the scaling chart: a rate (`y_label`) of one store at each concurrency
    (`x_label`), beside `limit`, the store's sequential-write limit in the same unit (None for
    the memory store). Curves with the same `panel` share a plot; `target`, if any, is a point
    (x, rate) the issue's acceptance asks the curve to reach."""

    panel: str
    store: str
    x_label: str
    y_label: str
    points: list[tuple[int, float]]
    limit: float | None
    target: tuple[int, float] | None = None


@dataclass
class Section:
    title: str
    lines: list[str]
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)

    def markdown(self) -> str:
        body = [f"## {self.title}", "", *self.lines]
        if self.notes:
            body += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(body) + "\n"


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A markdown table; `align` holds one of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(rule) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def times(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"
