"""Charts of model quality, as PNG bytes: the reliability diagram, and the encoding every chart shares.

Built on :class:`matplotlib.figure.Figure` directly, never pyplot: no global state, no display
backend, safe in Airflow workers and threads. The gating report's own charts
(:mod:`ml_tasks.reporting.charts`) use :func:`figure_png` too.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from ml_tasks.evaluation.metrics import reliability_table

#: A reliability curve's data: labels, probabilities, and weights (None: unweighted).
Curve = tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None]


def figure_png(figure: Figure, bbox_inches: str | None = None) -> bytes:
    """The figure as PNG bytes at 100 dpi; ``bbox_inches="tight"`` trims the margins (None:
    matplotlib's ``savefig.bbox`` setting, as when it is not given)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches=bbox_inches)
    return buffer.getvalue()


def reliability_diagram_png(curves: dict[str, Curve], bins: int = 15, title: str = "Reliability diagram") -> bytes:
    """A reliability diagram as PNG bytes: one line per curve, the diagonal, and a histogram of p.

    ``curves`` maps a legend label (e.g. ``"before"``, ``"after (isotonic)"``) to ``(y, p, w)``,
    ``w`` possibly None. Points are equal-mass bins, so each carries the same share of rows and
    the points crowd where the probabilities do. Drawn on a bare :class:`matplotlib.figure.Figure`
    with the Agg canvas: no pyplot, no global backend switch, safe in Airflow workers.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=(5, 4))
    FigureCanvasAgg(figure)
    curve_axes, histogram_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve_axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, (y, p, w) in curves.items():
        table = reliability_table(y, p, w, bins)
        ece = float(np.dot(table.mass, table.gaps))
        line, = curve_axes.plot(table.mean_p, table.mean_y, marker="o", markersize=3, label=f"{label}: ECE {ece:.3f}")
        histogram_axes.hist(np.asarray(p, dtype=float).reshape(-1), bins=20, range=(0, 1), weights=w,
                            histtype="step", color=line.get_color())
    curve_axes.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed positive rate", title=title)
    curve_axes.grid(alpha=0.3)
    curve_axes.legend(fontsize=7, loc="upper left")
    histogram_axes.set(xlabel="predicted probability", ylabel="rows (weighted)")
    histogram_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.tight_layout()
    return figure_png(figure)
