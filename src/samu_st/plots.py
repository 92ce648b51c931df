"""PNG plots of evaluation results (matplotlib, Agg canvas, no global backend state).

Figures are built with the object-oriented API on an explicit Agg canvas, so importing this
module (or calling it from a process that has chosen another backend) never touches
``matplotlib.pyplot`` or the global backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from samu_st.atomic import atomic_write
from samu_st.languages import BY_CODE
from samu_st.metrics import GroupScores

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GROUP_LABELS = ("High", "Mid", "Low")
_GROUP_COLOURS = {"high": "tab:blue", "mid": "tab:orange", "low": "tab:green", None: "tab:gray"}


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), point="plot")


def plot_group_bars(
    rows: Sequence[tuple[str, GroupScores]],
    metric: str,
    path: str | Path,
    title: str,
    scale: float = 1.0,
) -> Path:
    """Grouped bar chart: one cluster per resource group (High, Mid, Low), one bar per model.

    ``rows`` are (model name, scores); values are multiplied by ``scale`` (100 for error rates
    stored as fractions). A missing group mean is drawn as no bar with the label "n/a".
    """
    figure = _new_figure(max(6.0, 1.2 + 1.1 * len(rows) * 1.2), 4.2)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(rows))
    for m, (name, scores) in enumerate(rows):
        values = [scores.high, scores.mid, scores.low]
        xs = [g + (m - (len(rows) - 1) / 2) * width for g in range(3)]
        heights = [0.0 if v is None else v * scale for v in values]
        bars = axes.bar(xs, heights, width=width * 0.95, label=name)
        labels = ["n/a" if v is None else f"{v * scale:.1f}" for v in values]
        axes.bar_label(bars, labels=labels, fontsize=8, padding=2)
    axes.set_xticks(range(3), GROUP_LABELS)
    axes.set_xlabel("resource group (CoVoST-2 training hours)")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.margins(y=0.15)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="model", fontsize=8, loc="best")
    return _save(figure, path)


def plot_vs_hours(
    per_language: Mapping[str, float],
    hours: Mapping[str, float],
    metric: str,
    path: str | Path,
    title: str,
    hours_label: str,
    scale: float = 1.0,
) -> Path | None:
    """Scatter of each language's score against its training hours (log x), points labelled.

    Languages without positive hours are left out; returns ``None`` (and writes nothing) when
    no language is left.
    """
    langs = [lang for lang in per_language if hours.get(lang, 0.0) > 0.0]
    if not langs:
        return None
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    for group in ("high", "mid", "low", None):
        members = [lang for lang in langs if _group_of(lang) == group]
        if members:
            axes.scatter(
                [hours[lang] for lang in members],
                [per_language[lang] * scale for lang in members],
                color=_GROUP_COLOURS[group],
                label=group or "other",
                zorder=3,
            )
    axes.set_xscale("log")
    _label_points(axes, [(lang, hours[lang], per_language[lang] * scale) for lang in langs])
    axes.set_xlabel(hours_label)
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(title="group", fontsize=8)
    return _save(figure, path)


def _label_points(axes: Axes, points: Sequence[tuple[str, float, float]]) -> None:
    """Label each point to its right, pushing labels up so that labels of nearby points
    (languages with equal hours, common in CoVoST-2) do not overlap."""
    axes.autoscale_view()
    to_pixels = axes.transData.transform
    points_per_pixel = 72.0 / axes.figure.dpi
    placed: list[tuple[float, float]] = []  # label anchors in pixels
    for name, x, y in sorted(points, key=lambda p: (p[1], p[2])):
        px, py = to_pixels((x, y))
        ly = py
        while any(abs(qx - px) < 30 and abs(qy - ly) < 11 for qx, qy in placed):
            ly += 11
        placed.append((px, ly))
        axes.annotate(
            name,
            (x, y),
            xytext=(5, 2 + (ly - py) * points_per_pixel),
            textcoords="offset points",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "gray"} if ly != py else None,
        )


def _group_of(lang: str) -> str | None:
    language = BY_CODE.get(lang)
    return language.group if language else None
