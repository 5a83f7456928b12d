"""An SVG scatter of size against quality, laid out here and drawn by templates/plots/scatter.html.j2
(shared by report.html and sweep.html, so both stay self-contained)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    label: str  # drawn beside the dot
    title: str  # the dot's tooltip
    x: float
    y: float


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    label: str
    title: str


@dataclass(frozen=True)
class Scatter:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    dots: list[Dot]
    x_label: str
    y_label: str
    x_range: tuple[str, str]
    y_range: tuple[str, str]


def scatter(points: list[Point], x_label: str, y_label: str) -> Scatter:
    left, top, width, height = 70, 20, 520, 300

    def scale(value: float, low: float, high: float, span: int) -> float:
        return span * (value - low) / (high - low) if high > low else span / 2

    xs, ys = [p.x for p in points], [p.y for p in points]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    dots = [Dot(round(left + scale(p.x, x_low, x_high, width), 1),
                round(top + height - scale(p.y, y_low, y_high, height), 1), p.label, p.title)
            for p in points]  # fmt: skip
    return Scatter(left + width + 200, top + height + 50, left, top, width, height, dots, x_label, y_label,
                   (f"{x_low:.2f}", f"{x_high:.2f}"), (f"{y_low:.4g}", f"{y_high:.4g}"))  # fmt: skip
