"""The gate: may the challenger replace the champion?

Every check is recorded with the metric, both values, the difference, an interval, raw and
Holm-adjusted p-values, the threshold, the outcome and a one-line reason. The checks:

* **thresholds** — absolute bars on the challenger's test metrics (``acceptance.thresholds``);
* **champion comparisons** — paired on the *same* test rows, one per ``acceptance.champion``
  entry, each with the test that fits its metric: DeLong's test for ROC AUC, a paired Poisson
  bootstrap for log loss, Brier, PR AUC and ECE (one bootstrap shared by all of them, so they
  see the same replicates), and for accuracy at the decision threshold McNemar's count test
  (superiority) or a z-test on the weighted accuracy difference (non-inferiority). Every
  value and difference is weighted by the sampling weights. ``superior`` tests H0 "not
  better"; ``non_inferior`` tests H0 "worse by at least the margin". With no champion yet the
  challenger must beat the baseline candidate (``acceptance.baseline``);
* **slices** — per-slice harm checks for ``acceptance.slices.columns`` (slices with fewer
  than ``min_size`` rows or one class are listed, not tested), with a Simpson's-paradox flag
  when the overall difference and every slice disagree;
* **backtest consistency** — the challenger must beat the reference on at least
  ``min_win_fraction`` of the backtest folds, a tied fold counting as half a win (sign or
  Wilcoxon test reported, and required when ``require_significance``);
* **guardrails** — prediction latency per 1,000 rows and model size, absolute and relative to
  the champion.

The tests that argue for promotion (the comparisons, and the fold test when it is required)
form one family, marked ``family="promotion"``: their p-values are Holm-adjusted
(``statsmodels`` ``multipletests(method="holm")``) and such a test passes when its adjusted p is
below ``alpha``, so the chance of promoting on a fluke stays at ``alpha`` however many metrics
are tested. The slice checks (``family="harm"``) guard against harm instead, at ``alpha``
divided by the number of slices. The verdict is PASS only if every check passes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from ml_tasks.core.columns import CHAMPION_COLUMN, HIGHER_IS_BETTER
from ml_tasks.core.manifests import (
    BacktestManifest,
    EvaluationManifest,
    GateCheck,
    GateManifest,
    RunPlan,
)
from ml_tasks.core.spec import AcceptanceSpec, ComparisonSpec, ModelSpec
from ml_tasks.evaluation.metrics import compute_metrics
from ml_tasks.evaluation.statistics import (
    BootstrapResult,
    delong_paired,
    fold_consistency,
    holm,
    mcnemar_at_threshold,
    paired_bootstrap_many,
    simpson_pattern,
)
from ml_tasks.io.store import ArtifactStore

#: One row of the gate's slice table, for the report: the slice (column, value, rows) and either why
#: it was not tested or its paired comparison (challenger, reference, difference, p-value).
SliceRow = dict[str, object]


def threshold_checks(spec: ModelSpec, metrics: dict[str, float]) -> list[GateCheck]:
    checks = []
    for metric, bound in spec.acceptance.thresholds.items():
        value = metrics[metric]
        for kind, limit in (("min", bound.min), ("max", bound.max)):
            if limit is None:
                continue
            passed = value >= limit if kind == "min" else value <= limit
            relation = ">=" if kind == "min" else "<="
            checks.append(GateCheck(
                name=f"threshold:{metric}:{kind}", metric=metric, challenger=value, reference=None, difference=None,
                ci_low=None, ci_high=None, p_value=None, threshold=limit, passed=passed,
                reason=f"{metric} {value:.4f} {'meets' if passed else 'misses'} the spec's {kind} {relation} {limit}",
            ))
    return checks


def paired_tests(comparisons: list[ComparisonSpec], names: list[str], acceptance: AcceptanceSpec, y: np.ndarray,
                 p_challenger: np.ndarray, p_reference: np.ndarray, weights: np.ndarray,
                 reference_label: str) -> list[GateCheck]:
    """One check per comparison (named by ``names``), with the test its metric calls for.

    The bootstrapped metrics share one :func:`paired_bootstrap_many` call (seeded by
    ``acceptance.seed``): one pass over the rows and the same replicates for every metric (each
    metric's result is that of a bootstrap of it alone, up to rounding), and any number of
    comparisons of one metric. ``passed`` is provisional: :func:`apply_holm` decides it from the
    adjusted p-value.
    """
    bootstrapped = list(dict.fromkeys(c.metric for c in comparisons if c.metric not in ("roc_auc", "accuracy")))
    boots = paired_bootstrap_many(bootstrapped, y, p_challenger, p_reference, weights,
                                  replicates=acceptance.bootstrap_replicates, seed=acceptance.seed,
                                  alpha=2 * acceptance.alpha) if bootstrapped else {}
    return [_paired_check(comparison, name, acceptance, y, p_challenger, p_reference, weights, reference_label, boots)
            for comparison, name in zip(comparisons, names, strict=True)]


def paired_test(comparison: ComparisonSpec, acceptance: AcceptanceSpec, y: np.ndarray, p_challenger: np.ndarray,
                p_reference: np.ndarray, weights: np.ndarray, reference_label: str, name: str) -> GateCheck:
    """:func:`paired_tests` of one comparison."""
    return paired_tests([comparison], [name], acceptance, y, p_challenger, p_reference, weights, reference_label)[0]


def _paired_check(comparison: ComparisonSpec, name: str, acceptance: AcceptanceSpec, y: np.ndarray,
                  p_challenger: np.ndarray, p_reference: np.ndarray, weights: np.ndarray, reference_label: str,
                  boots: dict[str, BootstrapResult]) -> GateCheck:
    metric, margin, alpha = comparison.metric, comparison.margin, acceptance.alpha
    superior = comparison.mode == "superior"
    if metric == "roc_auc":
        result = delong_paired(y, p_challenger, p_reference, weights)
        challenger, reference, difference = result.auc_a, result.auc_b, result.difference
        low, high = result.ci(2 * alpha)  # two-sided 1 - 2 alpha: its ends are the one-sided bounds
        p_value = result.non_inferiority(0.0 if superior else margin, alpha).p_value
        test = "DeLong (Sun & Xu)"
    elif metric == "accuracy":
        challenger, reference, difference, low, high, p_value, test = accuracy_test(
            y, p_challenger, p_reference, acceptance.decision_threshold, 0.0 if superior else margin, alpha, weights)
    else:
        boot = boots[metric]
        challenger, reference, difference = boot.value_a, boot.value_b, boot.improvement
        low, high = boot.ci_low, boot.ci_high
        p_value = boot.p_value(0.0 if superior else margin)
        test = f"paired Poisson bootstrap ({acceptance.bootstrap_replicates} replicates)"
    bar = 0.0 if superior else -margin
    null = f"not better than {reference_label}" if superior else f"worse than {reference_label} by more than {margin}"
    return GateCheck(
        name=name, metric=metric, challenger=float(challenger), reference=float(reference),
        difference=float(difference), ci_low=float(low), ci_high=float(high), p_value=float(p_value),
        threshold=bar, passed=bool(p_value < alpha), test=test, family="promotion",
        reason=f"{metric} improvement {difference:+.4f} [{low:+.4f}, {high:+.4f}], H0 '{null}' p={p_value:.3g}",
    )


def accuracy_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, threshold: float, margin: float, alpha: float,
                  weights: np.ndarray | None = None) -> tuple[float, float, float, float, float, float, str]:
    """Paired accuracy at ``threshold``: (acc_a, acc_b, difference, ci_low, ci_high, one-sided p, test).

    From :func:`mcnemar_at_threshold`. The accuracies, their difference and its interval
    (two-sided ``1 - 2 alpha``) are weighted by ``weights``, like every other metric of the gate,
    so they estimate the population's accuracy. With no margin the p-value is
    :meth:`~ml_tasks.evaluation.statistics.mcnemar.McNemarResult.p_value_superior`: McNemar's
    exact count test under equal weights, else the weighted z-test (floored at McNemar's exact p
    for few discordant rows). A margin has no count test: ``(d + margin) / se`` on the weighted
    difference ``d`` with its design-based standard error (Nam's 1997 paired z-test when the
    weights are equal).
    """
    result = mcnemar_at_threshold(y, p_a, p_b, threshold, weights)
    only_a, only_b = int(result.table[0, 1]), int(result.table[1, 0])
    low, high = result.ci(2 * alpha)
    if margin == 0.0:
        p_value = result.p_value_superior(alpha)
        test = (f"McNemar (exact one-sided binomial; {only_a} vs {only_b} discordant rows)" if result.equal_weights
                else f"weighted z on the accuracy difference ({only_a} vs {only_b} discordant rows; unequal weights)")
    else:
        p_value = result.non_inferiority(margin, alpha).p_value
        test = f"paired z on discordant pairs ({only_a} vs {only_b} rows, weighted)"
    return result.accuracy_a, result.accuracy_b, result.difference, low, high, p_value, test


def apply_holm(checks: list[GateCheck], alpha: float) -> list[GateCheck]:
    """Holm-adjust the p-values of the promotion family; such a test passes when its adjusted p < alpha
    and its other condition (:attr:`GateCheck.condition_met`) holds."""
    tested = {}
    for index, check in enumerate(checks):
        if check.family == "promotion":
            assert check.p_value is not None, check.name  # a test of the promotion family always has a p-value
            tested[str(index)] = check.p_value
    adjusted = holm(tested, alpha) if tested else {}
    result = []
    for index, check in enumerate(checks):
        if str(index) not in adjusted:
            result.append(check)
            continue
        p_adjusted, reject = adjusted[str(index)]
        outcome = "passes" if reject else "fails"
        result.append(check.model_copy(update={
            "p_adjusted": float(p_adjusted), "passed": bool(reject) and check.condition_met,
            "reason": f"{check.reason}; Holm-adjusted p={p_adjusted:.3g} {outcome} alpha={alpha}",
        }))
    return result


def slice_checks(spec: ModelSpec, frame: pd.DataFrame, challenger_column: str, reference_column: str,
                 reference_label: str, overall: float | None = None,
                 ) -> tuple[list[GateCheck], list[SliceRow], str | None]:
    """Per-slice harm checks; rows for the report; a Simpson's-paradox warning.

    A slice fails when the challenger is *significantly* worse there by more than the slice
    margin (H0 "not worse by more than the margin" rejected at alpha / number of slices,
    Bonferroni). Requiring each slice to *prove* non-inferiority instead would fail every small
    slice for lack of rows, whatever the model; the overall comparisons carry that burden.
    ``overall`` is the overall improvement in the slice metric when the caller has it already
    (from its own comparison of that metric); without it, it is computed here.
    """
    slices, acceptance = spec.acceptance.slices, spec.acceptance
    comparison = ComparisonSpec(metric=slices.metric, mode="non_inferior", margin=slices.margin)
    tested: list[tuple[str, GateCheck]] = []
    rows: list[SliceRow] = []
    differences: dict[str, float] = {}
    for column in slices.columns:
        for value, part in frame.groupby(column, dropna=False, sort=True):
            label = f"{column}={value}"
            row: SliceRow = {"column": column, "value": str(value), "rows": len(part), "tested": False}
            if len(part) < slices.min_size or part["label"].nunique() < 2:
                row["note"] = f"not tested: {len(part)} rows (min_size {slices.min_size}) or one class"
                rows.append(row)
                continue
            check = paired_test(comparison, acceptance, part["label"].to_numpy(), part[challenger_column].to_numpy(),
                                part[reference_column].to_numpy(), part["weight"].to_numpy(), reference_label,
                                name=f"slice:{label}:{slices.metric}")
            assert check.difference is not None  # a paired check always measures its difference
            tested.append((label, check))
            differences[label] = check.difference
            rows.append({**row, "tested": True, "challenger": check.challenger, "reference": check.reference,
                         "difference": check.difference, "p_value": check.p_value})
    warning = None
    if differences:
        if overall is None:
            overall = _overall_improvement(frame, slices.metric, challenger_column, reference_column)
        warning = simpson_pattern(overall, differences)
    level = acceptance.alpha / max(len(tested), 1)
    return [_as_harm_check(check, label, slices.margin, level) for label, check in tested], rows, warning


def _overall_improvement(frame: pd.DataFrame, metric: str, challenger_column: str, reference_column: str) -> float:
    """The challenger's improvement in ``metric`` over all rows (positive: better)."""
    values = {c: compute_metrics(frame["label"], frame[c], frame["weight"])[metric]
              for c in (challenger_column, reference_column)}
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return sign * (values[challenger_column] - values[reference_column])


def _as_harm_check(check: GateCheck, label: str, margin: float, level: float) -> GateCheck:
    assert check.p_value is not None  # a paired check always has a p-value
    harm_p = 1.0 - check.p_value  # H0 "not worse by more than the margin"
    harmed = harm_p < level
    return check.model_copy(update={
        "p_value": harm_p, "passed": not harmed, "family": "harm",
        "reason": (f"{check.metric} {check.difference:+.4f} [{check.ci_low:+.4f}, {check.ci_high:+.4f}] in "
                   f"{label}: {'significantly' if harmed else 'not significantly'} worse than the "
                   f"reference by more than {margin} (p={harm_p:.3g}, level {level:.3g})"),
    })


def consistency_check(spec: ModelSpec, backtest: BacktestManifest, challenger: str, reference: str,
                      reference_label: str) -> GateCheck | None:
    """The challenger's wins over the reference across backtest folds (None without both in the backtest)."""
    consistency = spec.acceptance.backtest
    ours, theirs = backtest.per_fold.get(challenger), backtest.per_fold.get(reference)
    if not ours or not theirs:
        return None
    folds = sorted(set(ours) & set(theirs), key=int)
    sign = 1.0 if HIGHER_IS_BETTER[consistency.metric] else -1.0
    diffs = [sign * (ours[f][consistency.metric] - theirs[f][consistency.metric]) for f in folds]
    result = fold_consistency(diffs, consistency.min_win_fraction, spec.acceptance.alpha, test=consistency.test)
    enough = result.win_fraction >= consistency.min_win_fraction
    significance = consistency.require_significance
    return GateCheck(
        name=f"backtest:{consistency.metric}:wins", metric=consistency.metric, challenger=result.win_fraction,
        reference=None, difference=float(np.mean(diffs)), ci_low=float(min(diffs)), ci_high=float(max(diffs)),
        p_value=result.p_value if significance else None, family="promotion" if significance else None,
        condition_met=enough, threshold=consistency.min_win_fraction, passed=enough,
        test=f"{consistency.test} test over {result.n_folds} folds",
        reason=(f"wins {result.wins} and ties {result.ties} of {result.n_folds} backtest folds against "
                f"{reference_label} on {consistency.metric} ({result.win_fraction:.0%} counting ties as half; needs "
                f"{consistency.min_win_fraction:.0%}), one-sided {consistency.test} test p={result.p_value:.3g}"),
    )


def guardrail_checks(spec: ModelSpec, evaluation: EvaluationManifest, challenger: str | None = None) -> list[GateCheck]:
    """Latency per 1,000 rows and model size: under the spec's limits, and within a ratio of the champion's."""
    limits = spec.acceptance.guardrails
    costs = evaluation.serving_costs
    ours, champion = costs.get(challenger or evaluation.challenger), costs.get(CHAMPION_COLUMN)
    if ours is None:
        return []
    checks = []
    for key, label, absolute, ratio in (("latency_ms_per_1k", "latency per 1,000 rows (ms)",
                                         limits.max_latency_ms_per_1k, limits.max_latency_ratio),
                                        ("size_mb", "model size (MB)", limits.max_size_mb, limits.max_size_ratio)):
        value = ours[key]
        if absolute is not None:
            passed = value <= absolute
            checks.append(GateCheck(
                name=f"guardrail:{key}", metric=key, challenger=value, reference=None, difference=None, ci_low=None,
                ci_high=None, p_value=None, threshold=absolute, passed=passed,
                reason=f"{label} {value:.2f} {'within' if passed else 'above'} the limit {absolute}"))
        if ratio is not None and champion is not None and champion[key] > 0:
            relative = value / champion[key]
            passed = relative <= ratio
            checks.append(GateCheck(
                name=f"guardrail:{key}:ratio", metric=key, challenger=value, reference=champion[key],
                difference=value - champion[key], ci_low=None, ci_high=None, p_value=None, threshold=ratio,
                passed=passed,
                reason=f"{label} is {relative:.2f}x the champion's {champion[key]:.2f} "
                       f"({'within' if passed else 'above'} {ratio}x)"))
    return checks


def run_gate(spec: ModelSpec, plan: RunPlan, evaluation: EvaluationManifest, store: ArtifactStore,
             backtest: BacktestManifest | None = None) -> GateManifest:
    challenger = evaluation.challenger
    checks, slice_rows, simpson = gate_checks(spec, evaluation, store, backtest, challenger)
    if not all(c.passed for c in checks) and _may_fall_back(spec, evaluation):
        # No champion yet and the best candidate did not beat the baseline: the evidence says
        # ship the simpler model, if it clears the absolute bars on its own.
        fallback, _, _ = gate_checks(spec, evaluation, store, backtest, spec.baseline_name)
        if all(c.passed for c in fallback):
            failed = "; ".join(c.reason for c in checks if not c.passed)
            test_scores = {s.name: s.metrics.get(spec.selection_metric) for s in evaluation.candidates}
            best, baseline = test_scores.get(challenger), test_scores.get(spec.baseline_name)
            # The note shows the two test scores it chose between: the winner on validation and the baseline.
            note = GateCheck(
                name="fallback:baseline", metric=spec.selection_metric, challenger=baseline or 0.0, reference=best,
                difference=None if best is None or baseline is None else baseline - best,
                ci_low=None, ci_high=None, p_value=None, threshold=None, passed=True,
                reason=f"{challenger} (best on validation) did not clear the gate against the baseline ({failed}); "
                       f"the baseline {spec.baseline_name} is put forward instead")
            challenger, checks, slice_rows, simpson = spec.baseline_name, [note, *fallback], [], None
    verdict: Literal["PASS", "FAIL"] = "PASS" if all(c.passed for c in checks) else "FAIL"
    manifest = GateManifest(verdict=verdict, champion_version=evaluation.champion_version,
                            checks=checks, uri=plan.artifacts.gate, slices=slice_rows, simpson_warning=simpson,
                            challenger_model=evaluation.models[challenger])
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest


def _may_fall_back(spec: ModelSpec, evaluation: EvaluationManifest) -> bool:
    return (evaluation.champion is None and evaluation.challenger != spec.baseline_name
            and spec.baseline_name in evaluation.models)


def gate_checks(spec: ModelSpec, evaluation: EvaluationManifest, store: ArtifactStore,
                backtest: BacktestManifest | None, challenger: str,
                ) -> tuple[list[GateCheck], list[SliceRow], str | None]:
    """Every check of ``challenger`` (Holm-adjusted), the slice rows and a Simpson warning."""
    scores = {s.name: s.metrics for s in evaluation.candidates}
    checks = threshold_checks(spec, scores[challenger])
    slice_rows: list[SliceRow] = []
    simpson = None
    reference = _reference(spec, evaluation, challenger)
    if reference is not None:
        column, label, role, recipe = reference
        frame = store.read_frame(evaluation.predictions_uri)
        ours = f"p_{challenger}"
        y, w = frame["label"].to_numpy(), frame["weight"].to_numpy()
        comparisons = spec.acceptance.champion if role == "champion" else [spec.acceptance.baseline]
        compared = paired_tests(comparisons, [f"{role}:{c.metric}:{c.mode}" for c in comparisons], spec.acceptance,
                                y, frame[ours].to_numpy(), frame[column].to_numpy(), w, label)
        checks.extend(compared)
        overall = next((c.difference for c in compared if c.metric == spec.acceptance.slices.metric), None)
        found, slice_rows, simpson = slice_checks(spec, frame, ours, column, label, overall)
        checks.extend(found)
        if backtest is not None:
            consistency = consistency_check(spec, backtest, challenger, recipe, label)
            if consistency is not None:
                checks.append(consistency)
    checks.extend(guardrail_checks(spec, evaluation, challenger))
    return apply_holm(checks, spec.acceptance.alpha), slice_rows, simpson


def _reference(spec: ModelSpec, evaluation: EvaluationManifest, challenger: str) -> tuple[str, str, str, str] | None:
    """(prediction column, label, role, backtest name) of what the challenger is compared with.

    The champion when there is one; otherwise the baseline candidate (unless the baseline
    itself is the challenger).
    """
    from ml_tasks.core.columns import CHAMPION

    if evaluation.champion is not None:
        return CHAMPION_COLUMN, evaluation.champion.name, "champion", CHAMPION
    if challenger != spec.baseline_name:
        return f"p_{spec.baseline_name}", f"baseline {spec.baseline_name}", "baseline", spec.baseline_name
    return None
