"""PNG charts for officers (matplotlib, no display): the reporting rate and the obstacles.

Every word drawn comes from the caller (rendered from templates); this module only draws.
Figures are built with `matplotlib.figure.Figure`, never pyplot: pyplot keeps global state that
is not safe across the threads the handlers render in.
"""

from __future__ import annotations

import functools
import io
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import ParamSpec

import matplotlib

# Before anything could import pyplot: no display, ever.
matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# 6 inches at 180 dpi: 1080 px wide, the width phones show without scaling up.
WIDTH_INCHES = 6.0
DPI = 180
FONT = 11
ON_TIME_COLOR = "#2e7d32"
LATE_COLOR = "#f9a825"
# Colour-blind friendly, distinct on a small screen (Okabe-Ito, then a few more).
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
    "#44AA99",
    "#117733",
)
# Kecamatan beyond this many are drawn as one segment (the legend must stay readable).
MAX_SERIES = 10
LABEL_WIDTH = 24
# Matplotlib promises no thread safety (its font and text caches are shared): handlers render in
# worker threads, one chart at a time.
_RENDERING = threading.Lock()
_P = ParamSpec("_P")


def _plain(text: str) -> str:
    """Names are data: a "$" must not start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _wrap(text: str, width: int = LABEL_WIDTH) -> str:
    # Labels such as "Pengurus sibuk/kurang tenaga" may break after a slash, not inside a word.
    lines = textwrap.wrap(_plain(text).replace("/", "/ "), width, break_long_words=False)
    return "\n".join(line.replace("/ ", "/") for line in lines) or " "


def _title(text: str, width: int = 48) -> str:
    return "\n".join(
        "\n".join(textwrap.wrap(line, width)) or " " for line in _plain(text).splitlines()
    )


def _suptitle(figure: Figure, title: str) -> None:
    # Over the whole figure, from its left edge: long labels on the left must not push it out.
    figure.suptitle(_title(title), x=0.02, ha="left", fontsize=FONT + 2, fontweight="bold")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _locked(draw: Callable[_P, bytes]) -> Callable[_P, bytes]:
    @functools.wraps(draw)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> bytes:
        with _RENDERING:
            return draw(*args, **kwargs)

    return locked


@_locked
def reporting_rate_png(
    points: Sequence[tuple[str, float, float]],
    *,
    title: str,
    on_time_label: str,
    late_label: str,
    axis_label: str,
) -> bytes:
    """Stacked bars of the share (%) of cooperatives that reported on time and late, one bar
    per month. `points` are (month label such as "Okt 26", on time %, late %), oldest first."""
    figure = Figure(figsize=(WIDTH_INCHES, 6.0), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    labels = [_plain(label) for label, _, _ in points]
    on_time = [max(0.0, value) for _, value, _ in points]
    late = [max(0.0, value) for _, _, value in points]
    positions = list(range(len(points)))
    axes.bar(positions, on_time, color=ON_TIME_COLOR, label=_plain(on_time_label), width=0.7)
    axes.bar(positions, late, bottom=on_time, color=LATE_COLOR, label=_plain(late_label), width=0.7)
    for x, low, high in zip(positions, on_time, late, strict=True):
        total = low + high
        axes.text(x, total + 1.5, f"{total:.0f}", ha="center", va="bottom", fontsize=FONT - 2)
    axes.set_ylim(0, 112)
    axes.set_yticks([0, 25, 50, 75, 100])
    axes.set_ylabel(_plain(axis_label), fontsize=FONT)
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize=FONT - 1)
    axes.tick_params(axis="y", labelsize=FONT - 1)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.legend(loc="upper left", fontsize=FONT - 1, ncols=2, frameon=False)
    _suptitle(figure, title)
    return _png(figure)


@_locked
def obstacles_by_kecamatan_png(
    obstacles: Sequence[str],
    kecamatan: Sequence[str],
    counts: Sequence[Sequence[int]],
    *,
    title: str,
    axis_label: str,
    others_label: str,
) -> bytes:
    """Horizontal bars, one per obstacle (largest at the top), split by kecamatan.

    `counts[i][j]` is how many cooperatives of `kecamatan[j]` name `obstacles[i]`. Beyond
    MAX_SERIES kecamatan, the smaller ones are drawn together as `others_label`.
    """
    if len(counts) != len(obstacles) or any(len(row) != len(kecamatan) for row in counts):
        raise ValueError("counts must be one row per obstacle, one column per kecamatan")
    series = list(kecamatan)
    columns = [[int(row[j]) for row in counts] for j in range(len(series))]
    if len(series) > MAX_SERIES:
        order = sorted(range(len(series)), key=lambda j: -sum(columns[j]))
        kept, rest = order[: MAX_SERIES - 1], order[MAX_SERIES - 1 :]
        kept.sort()
        merged = [sum(columns[j][i] for j in rest) for i in range(len(obstacles))]
        series = [series[j] for j in kept] + [others_label]
        columns = [columns[j] for j in kept] + [merged]
    rows = len(obstacles)
    height = 2.2 + 0.45 * max(rows, 1) + 0.3 * ((len(series) + 1) // 2)
    figure = Figure(figsize=(WIDTH_INCHES, min(height, 13.0)), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    # The first obstacle at the top.
    positions = [rows - 1 - i for i in range(rows)]
    left = [0] * rows
    for index, (name, column) in enumerate(zip(series, columns, strict=True)):
        axes.barh(
            positions,
            column,
            left=left,
            color=PALETTE[index % len(PALETTE)],
            label=_plain(name),
            height=0.7,
        )
        left = [a + b for a, b in zip(left, column, strict=True)]
    for y, total in zip(positions, left, strict=True):
        axes.text(total + 0.2, y, str(total), va="center", fontsize=FONT - 1)
    axes.set_yticks(positions, [_wrap(name) for name in obstacles], fontsize=FONT - 1)
    axes.set_xlim(0, max([*left, 1]) * 1.12 + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(_plain(axis_label), fontsize=FONT)
    axes.tick_params(axis="x", labelsize=FONT - 1)
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if len(series) > 1:
        figure.legend(
            loc="outside lower center", ncols=min(3, len(series)), fontsize=FONT - 2, frameon=False
        )
    _suptitle(figure, title)
    return _png(figure)
