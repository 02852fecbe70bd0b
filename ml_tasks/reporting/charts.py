"""Charts of the gating report, as PNG bytes (embedded as data URIs: the report needs no network).

Built on :class:`matplotlib.figure.Figure` directly, never pyplot: no global state, no display
backend, safe in Airflow workers and threads.
"""

from __future__ import annotations

import base64

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ml_tasks.evaluation.charts import figure_png

_SIZE = (5.6, 3.2)


def as_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(figure: Figure) -> bytes:
    return figure_png(figure, bbox_inches="tight")


def fold_chart_png(per_fold: dict[str, dict[str, dict[str, float]]], metric: str,
                   highlight: str | None = None) -> bytes:
    """``metric`` per backtest fold, one line per model (the challenger drawn thicker)."""
    figure = Figure(figsize=_SIZE)
    axes = figure.add_subplot()
    for name, folds in sorted(per_fold.items()):
        points = sorted((int(fold), values[metric]) for fold, values in folds.items() if metric in values)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o", linewidth=2.5 if name == highlight else 1.2, label=name)
    axes.set_xlabel("fold (later to the right)")
    axes.set_ylabel(metric)
    axes.set_title(f"Backtest: {metric} per fold")
    locator = axes.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # the default (AutoLocator) is one: whole fold numbers only
        locator.set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def staleness_png(curve: dict, metric: str, schedule_days: float | None) -> bytes:
    """Mean ``metric`` against model age, with the recommended retraining interval."""
    figure = Figure(figsize=_SIZE)
    axes = figure.add_subplot()
    points = curve.get("points", [])
    xs = [p["age_days"] for p in points]
    ys = [p["mean"] for p in points]
    axes.plot(xs, ys, marker="o", label=f"mean {metric} over folds")
    if curve.get("interval_days") is not None:
        axes.axvline(curve["interval_days"] + curve.get("gap_days", 0), color="tab:red", linestyle="--",
                     label=f"retrain every {curve['interval_days']:.0f} days")
    if schedule_days is not None:
        axes.axvline(schedule_days + curve.get("gap_days", 0), color="tab:green", linestyle=":",
                     label=f"current schedule (~{schedule_days:.0f} days)")
    axes.set_xlabel("model age at scoring (days since its training cutoff)")
    axes.set_ylabel(metric)
    axes.set_title("Staleness: quality against model age")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def intervals_png(checks: list[dict]) -> bytes:
    """Each paired comparison's improvement with its interval, against its pass bar."""
    rows = [c for c in checks if c.get("ci_low") is not None and c.get("difference") is not None
            and not c["name"].startswith("backtest:")]  # fold wins are on another scale
    figure = Figure(figsize=(_SIZE[0], 0.45 * len(rows) + 1.2))
    axes = figure.add_subplot()
    for index, check in enumerate(rows):
        colour = "tab:green" if check["passed"] else "tab:red"
        axes.plot([check["ci_low"], check["ci_high"]], [index, index], color=colour, linewidth=2)
        axes.plot([check["difference"]], [index], marker="o", color=colour)
        if check.get("threshold") is not None:
            axes.plot([check["threshold"]], [index], marker="|", markersize=14, color="black")
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(rows)), [c["name"] for c in rows], fontsize=7)
    axes.set_xlabel("improvement of the challenger (| = the bar it must clear)")
    axes.set_title("Paired comparisons: estimate and interval")
    axes.grid(alpha=0.3, axis="x")
    return _png(figure)
