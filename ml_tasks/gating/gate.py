"""The gate: may the challenger replace the champion?

Every check is recorded with the metric, both values, the difference, an interval, the p-value
and the rule it was judged by, the threshold, the outcome and a one-line reason. The checks:

* **thresholds** — absolute bars on the challenger's test metrics (``acceptance.thresholds``);
* **champion comparisons** — paired on the *same* test rows, one per ``acceptance.champion``
  entry, each with the test that fits its metric: DeLong's test for ROC AUC, a paired Poisson
  bootstrap for log loss, Brier, PR AUC and ECE (one bootstrap shared by all of them, so they
  see the same replicates), and for accuracy at the decision threshold McNemar's count test
  (superiority) or a z-test on the weighted accuracy difference (a margin or a minimum
  improvement). Every value and difference is weighted by the sampling weights, on
  probabilities clipped as the metrics table clips them
  (:func:`~ml_tasks.evaluation.metrics.clip_probabilities`), so the AUC tested is the AUC shown.
  ``superior`` tests H0 "the gain is at most ``min_improvement``"; ``non_inferior`` tests H0
  "worse by at least the margin". With no champion yet the challenger must beat the baseline
  candidate (``acceptance.baseline``);
* **slices** — per-slice harm checks for ``acceptance.slices.columns`` (slices with fewer than
  ``min_size`` rows, or fewer than ``min_class_rows`` positive or negative rows, are listed
  with a note, not tested), with a Simpson's-paradox flag when the overall difference and every
  slice disagree;
* **backtest consistency** — the challenger must beat the reference on at least
  ``min_win_fraction`` of the backtest folds, a tied fold counting as half a win (sign or
  Wilcoxon test reported, and required when ``require_significance``). When the challenger's
  recipe is the reference's (same family and parameters), or no fold tells them apart, the
  check is "not informative": it passes, says so, and is no test;
* **guardrails** — prediction latency per 1,000 rows and model size, absolute and relative to
  the champion.

**Decision rules** (each check records its own in ``rule`` and ``level``). The verdict is PASS
only if every check passes.

* The tests that argue for promotion (the comparisons, and the fold test when it is required:
  ``family="promotion"``) form an *intersection–union* test (Berger 1982): the gate promotes
  only if every one of them rejects its null, so its null is the union "not good enough on at
  least one", and when any one component null is true a false promotion needs that test to
  err, which happens with probability at most ``alpha``. Each test is therefore judged on its
  own raw p-value at ``alpha`` (``rule="intersection_union"``, ``p_adjusted`` None): Holm or
  Bonferroni across them (earlier releases used Holm; their gate.json read ``rule="holm"``)
  protects nothing further and only costs power. ``tests/gating/test_decision_rule.py``
  simulates both.
* The slice harm checks (``family="harm"``) are the other way round: *any one* significantly
  harmed slice fails the gate, so the chance of a false FAIL grows with the number of slices.
  There each slice is tested at ``alpha / k`` for ``k`` tested slices (Bonferroni,
  ``rule="bonferroni"``), and ``p_adjusted = min(1, k p)`` is what is compared with ``alpha``.

**Too little data.** A paired test needs ``acceptance.min_class_rows`` positive and negative
rows with weight (never fewer than 2): below it a comparison is ``status="insufficient_data"``,
has no p-value and fails, so the champion stays (fails closed), and its reason names the counts.

**The champion's health.** On every run with a champion the absolute thresholds are applied to
the champion's own metrics on the same rows (``GateManifest.champion_health``). When it fails one,
``acceptance.degraded_champion`` decides: ``alert`` (the default) changes nothing else: the
challenger must still clear every check. ``replace_if_better`` waives a bar the challenger misses
(``status="waived"``, ``passed`` True) only if the champion misses that same bar, the challenger
is no worse on it, and the challenger is *significantly better* than the champion on every
comparison (a ``superior`` comparison shows that itself; a ``non_inferior`` one gets an extra
superiority test, ``degraded_champion:<metric>:superior``, judged as a promotion test). Anything
else (guardrails, slices, folds) still decides as usual. ``GateManifest.champion_note`` says in
one paragraph what the champion fails, the policy, and what it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from ml_tasks.core.columns import CHAMPION, CHAMPION_COLUMN, HIGHER_IS_BETTER
from ml_tasks.core.manifests import (
    BacktestManifest,
    EvaluationManifest,
    GateCheck,
    GateManifest,
    RunPlan,
    TrainResult,
)
from ml_tasks.core.spec import AcceptanceSpec, ComparisonSpec, ModelSpec
from ml_tasks.evaluation.metrics import clip_probabilities, compute_metrics
from ml_tasks.evaluation.statistics import (
    BootstrapResult,
    accuracy_test,
    class_counts,
    delong_paired,
    paired_bootstrap_many,
    simpson_pattern,
)
from ml_tasks.evaluation.statistics.inputs import as_labels
from ml_tasks.gating.evaluate import fail_unscored_champion
from ml_tasks.gating.folds import Recipe, consistency_check
from ml_tasks.io.store import ArtifactStore

#: One row of the gate's slice table, for the report: the slice (column, value, rows) and either why
#: it was not tested (``note``) or its harm check's numbers: challenger, reference, difference,
#: ``p_value`` and ``p_adjusted`` (the same numbers as the check), ``level`` and ``passed``.
SliceRow = dict[str, object]

#: Fewest rows of each class any paired test can use, whatever the spec says (DeLong's variance
#: divides by m - 1).
MIN_TESTABLE_CLASS_ROWS = 2

#: How a promotion test's outcome reads after its p-value.
_IUT = "each promotion test at alpha on its own; all must pass"


def threshold_checks(spec: ModelSpec, metrics: dict[str, float], prefix: str = "threshold",
                     whose: str = "") -> list[GateCheck]:
    """One check per bound of ``acceptance.thresholds`` on ``metrics``, named ``<prefix>:<metric>:<min|max>``.

    ``whose`` starts each reason (e.g. "the champion's "): the same bars serve the challenger and
    the champion's health.
    """
    checks = []
    for metric, bound in spec.acceptance.thresholds.items():
        value = metrics[metric]
        for kind, limit in (("min", bound.min), ("max", bound.max)):
            if limit is None:
                continue
            passed = value >= limit if kind == "min" else value <= limit
            relation = ">=" if kind == "min" else "<="
            checks.append(GateCheck(
                name=f"{prefix}:{metric}:{kind}", metric=metric, challenger=value, reference=None, difference=None,
                ci_low=None, ci_high=None, p_value=None, threshold=limit, passed=passed,
                reason=f"{whose}{metric} {value:.4f} {'meets' if passed else 'misses'} the spec's {kind} {relation} "
                       f"{limit}",
            ))
    return checks


def champion_health(spec: ModelSpec, evaluation: EvaluationManifest) -> list[GateCheck]:
    """The absolute thresholds applied to the champion's own metrics on the test rows ([] without one)."""
    if evaluation.champion is None:
        return []
    return threshold_checks(spec, evaluation.champion.metrics, prefix="champion_health",
                            whose=f"{evaluation.champion.name}'s ")


def _min_class_rows(acceptance: AcceptanceSpec) -> int:
    return max(acceptance.min_class_rows, MIN_TESTABLE_CLASS_ROWS)


def paired_tests(comparisons: list[ComparisonSpec], names: list[str], acceptance: AcceptanceSpec, y: np.ndarray,
                 p_challenger: np.ndarray, p_reference: np.ndarray, weights: np.ndarray,
                 reference_label: str) -> list[GateCheck]:
    """One check per comparison (named by ``names``), with the test its metric calls for.

    Probabilities are clipped first (:func:`~ml_tasks.evaluation.metrics.clip_probabilities`), so
    every test sees what the metrics table saw. With fewer than ``acceptance.min_class_rows``
    positive or negative rows every comparison is an "insufficient data" check that fails.
    The bootstrapped metrics share one :func:`paired_bootstrap_many` call (seeded by
    ``acceptance.seed``): one pass over the rows and the same replicates for every metric (each
    metric's result is that of a bootstrap of it alone, up to rounding), and any number of
    comparisons of one metric. ``passed`` is provisional: :func:`judge_promotion_family` decides it.
    """
    a, b = clip_probabilities(p_challenger), clip_probabilities(p_reference)
    positives, negatives = class_counts(y, weights)
    if min(positives, negatives) < _min_class_rows(acceptance):
        return [_insufficient_check(comparison, name, acceptance, y, a, b, weights, (positives, negatives))
                for comparison, name in zip(comparisons, names, strict=True)]
    bootstrapped = list(dict.fromkeys(c.metric for c in comparisons if c.metric not in ("roc_auc", "accuracy")))
    boots = paired_bootstrap_many(bootstrapped, y, a, b, weights,
                                  replicates=acceptance.bootstrap_replicates, seed=acceptance.seed,
                                  alpha=2 * acceptance.alpha) if bootstrapped else {}
    return [_paired_check(comparison, name, acceptance, y, a, b, weights, reference_label, boots)
            for comparison, name in zip(comparisons, names, strict=True)]


def paired_test(comparison: ComparisonSpec, acceptance: AcceptanceSpec, y: np.ndarray, p_challenger: np.ndarray,
                p_reference: np.ndarray, weights: np.ndarray, reference_label: str, name: str) -> GateCheck:
    """:func:`paired_tests` of one comparison."""
    return paired_tests([comparison], [name], acceptance, y, p_challenger, p_reference, weights, reference_label)[0]


def _paired_check(comparison: ComparisonSpec, name: str, acceptance: AcceptanceSpec, y: np.ndarray,
                  p_challenger: np.ndarray, p_reference: np.ndarray, weights: np.ndarray, reference_label: str,
                  boots: dict[str, BootstrapResult]) -> GateCheck:
    metric, alpha = comparison.metric, acceptance.alpha
    superior = comparison.mode == "superior"
    gain = comparison.min_improvement if superior else 0.0
    margin = 0.0 if superior else comparison.margin
    if metric == "roc_auc":
        result = delong_paired(y, p_challenger, p_reference, weights)
        challenger, reference, difference = result.auc_a, result.auc_b, result.difference
        low, high = result.ci(2 * alpha)  # two-sided 1 - 2 alpha: its ends are the one-sided bounds
        tested = result.superiority(alpha, gain) if superior else result.non_inferiority(margin, alpha)
        p_value = tested.p_value
        test = "DeLong (Sun & Xu)" + ("; zero variance estimated, SE at its worst-case bound 1/sqrt(min class rows)"
                                      if result.se_bounded else "")
    elif metric == "accuracy":
        challenger, reference, difference, low, high, p_value, test = accuracy_test(
            y, p_challenger, p_reference, acceptance.decision_threshold, margin, alpha, weights, gain)
    else:
        boot = boots[metric]
        challenger, reference, difference = boot.value_a, boot.value_b, boot.improvement
        low, high = boot.ci_low, boot.ci_high
        p_value = boot.p_superior(gain) if superior else boot.p_value(margin)
        test = f"paired Poisson bootstrap ({acceptance.bootstrap_replicates} replicates)"
    bar = gain if superior else -margin
    return GateCheck(
        name=name, metric=metric, challenger=float(challenger), reference=float(reference),
        difference=float(difference), ci_low=float(low), ci_high=float(high), p_value=float(p_value),
        threshold=bar, passed=bool(p_value <= alpha), test=test, family="promotion",
        reason=f"{metric} improvement {difference:+.4f} [{low:+.4f}, {high:+.4f}], "
               f"H0 '{_null(comparison, reference_label)}' p={p_value:.3g}",
    )


def _null(comparison: ComparisonSpec, reference_label: str) -> str:
    if comparison.mode == "non_inferior":
        return f"worse than {reference_label} by more than {comparison.margin}"
    if comparison.min_improvement == 0.0:
        return f"not better than {reference_label}"
    return f"not better than {reference_label} by more than {comparison.min_improvement}"


def _insufficient_check(comparison: ComparisonSpec, name: str, acceptance: AcceptanceSpec, y: np.ndarray,
                        a: np.ndarray, b: np.ndarray, weights: np.ndarray, counts: tuple[int, int]) -> GateCheck:
    """A comparison with too few rows of a class to test: its point values, no p-value, failed."""
    metric = comparison.metric
    if metric == "accuracy":
        positive = as_labels(y)
        values = [float(np.average((p >= acceptance.decision_threshold) == positive, weights=weights)) for p in (a, b)]
    else:
        values = [compute_metrics(y, p, weights)[metric] for p in (a, b)]
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    superior = comparison.mode == "superior"
    bar = comparison.min_improvement if superior else -comparison.margin
    return GateCheck(
        name=name, metric=metric, challenger=values[0], reference=values[1], difference=sign * (values[0] - values[1]),
        ci_low=None, ci_high=None, p_value=None, threshold=bar, passed=False, family="promotion",
        rule="intersection_union", level=acceptance.alpha, status="insufficient_data",
        reason=f"{metric}: insufficient data, {counts[0]} positive and {counts[1]} negative rows; a paired test needs "
               f"at least {_min_class_rows(acceptance)} of each (acceptance.min_class_rows), so none was run and "
               f"the check fails (the champion stays)",
    )


def judge_promotion_family(checks: list[GateCheck], alpha: float) -> list[GateCheck]:
    """Judge each untested-yet promotion test on its own p-value at ``alpha`` (intersection–union).

    A test passes when ``p <= alpha`` and its other condition (:attr:`GateCheck.condition_met`)
    holds; the gate's verdict needs all of them. No adjustment across them: see the module's
    docstring for why that keeps false promotions at ``alpha``.
    """
    result = []
    for check in checks:
        if check.family != "promotion" or check.rule is not None:
            result.append(check)
            continue
        assert check.p_value is not None, check.name  # a promotion test that ran always has a p-value
        reject = check.p_value <= alpha
        result.append(check.model_copy(update={
            "passed": reject and check.condition_met, "rule": "intersection_union", "level": alpha, "p_adjusted": None,
            "reason": f"{check.reason} {'<=' if reject else '>'} alpha {alpha} ({_IUT})",
        }))
    return result


def slice_checks(spec: ModelSpec, frame: pd.DataFrame, challenger_column: str, reference_column: str,
                 reference_label: str, overall: float | None = None,
                 ) -> tuple[list[GateCheck], list[SliceRow], str | None]:
    """Per-slice harm checks; rows for the report; a Simpson's-paradox warning.

    A slice fails when the challenger is *significantly* worse there by more than the slice
    margin (H0 "not worse by more than the margin" rejected at alpha / number of tested slices,
    Bonferroni, since any one harmed slice fails the gate). Requiring each slice to *prove*
    non-inferiority instead would fail every small slice for lack of rows, whatever the model;
    the overall comparisons carry that burden. A slice with fewer than ``slices.min_size`` rows,
    or fewer than ``acceptance.min_class_rows`` positive or negative rows, is listed with a note
    and not tested. ``overall`` is the overall improvement in the slice metric when the caller
    has it already (from its own comparison of that metric); without it, it is computed here.
    """
    slices, acceptance = spec.acceptance.slices, spec.acceptance
    comparison = ComparisonSpec(metric=slices.metric, mode="non_inferior", margin=slices.margin)
    tested: list[tuple[str, GateCheck, SliceRow]] = []
    rows: list[SliceRow] = []
    for column in slices.columns:
        for value, part in frame.groupby(column, dropna=False, sort=True):
            label = f"{column}={value}"
            row: SliceRow = {"column": column, "value": str(value), "rows": len(part), "tested": False}
            rows.append(row)
            note = _untested_slice(acceptance, part)
            if note is not None:
                row["note"] = note
                continue
            check = paired_test(comparison, acceptance, part["label"].to_numpy(), part[challenger_column].to_numpy(),
                                part[reference_column].to_numpy(), part["weight"].to_numpy(), reference_label,
                                name=f"slice:{label}:{slices.metric}")
            tested.append((label, check, row))
    warning = None
    if tested:
        if overall is None:
            overall = _overall_improvement(frame, slices.metric, challenger_column, reference_column)
        warning = simpson_pattern(overall, {label: float(check.difference or 0.0) for label, check, _ in tested})
    harms = []
    for label, check, row in tested:
        harm = _as_harm_check(check, label, slices.margin, acceptance.alpha, len(tested))
        harms.append(harm)
        row.update(tested=True, challenger=harm.challenger, reference=harm.reference, difference=harm.difference,
                   p_value=harm.p_value, p_adjusted=harm.p_adjusted, level=harm.level, passed=harm.passed)
    return harms, rows, warning


def _untested_slice(acceptance: AcceptanceSpec, part: pd.DataFrame) -> str | None:
    """Why a slice is not tested (its note), or None when it is."""
    minimum = acceptance.slices.min_size
    if len(part) < minimum:
        return f"not tested: {len(part)} rows, below min_size {minimum}"
    positives, negatives = class_counts(part["label"].to_numpy(), part["weight"].to_numpy())
    if min(positives, negatives) < _min_class_rows(acceptance):
        return (f"not tested: {positives} positive and {negatives} negative rows, fewer than "
                f"{_min_class_rows(acceptance)} of each (acceptance.min_class_rows)")
    return None


def _overall_improvement(frame: pd.DataFrame, metric: str, challenger_column: str, reference_column: str) -> float:
    """The challenger's improvement in ``metric`` over all rows (positive: better)."""
    values = {c: compute_metrics(frame["label"], frame[c], frame["weight"])[metric]
              for c in (challenger_column, reference_column)}
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return sign * (values[challenger_column] - values[reference_column])


def _as_harm_check(check: GateCheck, label: str, margin: float, alpha: float, tested: int) -> GateCheck:
    """The slice's non-inferiority check turned round: H0 "not worse by more than the margin", Bonferroni."""
    assert check.p_value is not None  # a slice is tested only with enough rows of each class
    harm_p = 1.0 - check.p_value  # H0 "not worse by more than the margin"
    level = alpha / max(tested, 1)
    harmed = harm_p < level
    return check.model_copy(update={
        "p_value": harm_p, "p_adjusted": min(1.0, harm_p * tested), "passed": not harmed, "family": "harm",
        "rule": "bonferroni", "level": level,
        "reason": (f"{check.metric} {check.difference:+.4f} [{check.ci_low:+.4f}, {check.ci_high:+.4f}] in "
                   f"{label}: {'significantly' if harmed else 'not significantly'} worse than the "
                   f"reference by more than {margin} (p={harm_p:.3g}, level {level:.3g} = alpha {alpha} / "
                   f"{tested} slices, Bonferroni: any one harmed slice fails the gate)"),
    })


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
             backtest: BacktestManifest | None = None, recipes: Mapping[str, Recipe] | None = None) -> GateManifest:
    """Decide, record and write the gate (see the module's docstring).

    ``recipes`` maps backtest names (candidates, ``"champion"``) to their recipes; the candidates'
    are read from their train results in the store when not given. With the champion's (its
    ``refit.recipe``, as the backtest retrains it) the fold check knows a shared recipe.
    """
    challenger = evaluation.challenger
    known = {**_stored_recipes(plan, store, evaluation), **(recipes or {})}
    checks, slice_rows, simpson = gate_checks(spec, evaluation, store, backtest, challenger, known)
    health = champion_health(spec, evaluation)
    policy = spec.acceptance.degraded_champion if any(not c.passed for c in health) else None
    decision = None
    if policy == "replace_if_better":
        checks, decision = replace_if_better(spec, evaluation, store, checks, health)
    if not all(c.passed for c in checks) and _may_fall_back(spec, evaluation):
        # No champion yet and the best candidate did not beat the baseline: the evidence says
        # ship the simpler model, if it clears the absolute bars on its own.
        fallback, _, _ = gate_checks(spec, evaluation, store, backtest, spec.baseline_name, known)
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
                            challenger_model=evaluation.models[challenger], champion_health=health,
                            degraded_champion_policy=policy,
                            champion_note=_champion_note(evaluation, health, policy, decision, verdict))
    manifest = fail_unscored_champion(manifest, evaluation)  # its columns are gone: FAIL, named
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest


def _stored_recipes(plan: RunPlan, store: ArtifactStore, evaluation: EvaluationManifest) -> dict[str, Recipe]:
    """Each candidate's recipe (family and tuned params) from its train result, where the store has one."""
    found: dict[str, Recipe] = {}
    for name in evaluation.models:
        uri = plan.artifacts.train_result(name)
        if store.exists(uri):
            trained = TrainResult.model_validate(store.read_json(uri))
            found[name] = {"family": trained.family, "params": trained.params}
    return found


def replace_if_better(spec: ModelSpec, evaluation: EvaluationManifest, store: ArtifactStore,
                      checks: list[GateCheck], health: list[GateCheck]) -> tuple[list[GateCheck], str]:
    """``degraded_champion: replace_if_better``: waive the bars the challenger misses, or say why not.

    Returns the checks (missed bars marked ``waived`` and passed, plus a superiority test per
    ``non_inferior`` comparison, judged like every promotion test) and a sentence on what happened.
    """
    assert evaluation.champion is not None  # a failed health check needs a champion
    champion = evaluation.champion.name
    missed = [c for c in checks if c.name.startswith("threshold:") and not c.passed]
    if not missed:
        return checks, "the challenger clears every bar itself, so nothing is waived"
    champion_values = {c.name.removeprefix("champion_health:"): c for c in health if not c.passed}
    blockers = []
    for check in missed:
        bar = check.name.removeprefix("threshold:")
        theirs = champion_values.get(bar)
        if theirs is None:
            blockers.append(f"the challenger misses a bar {champion} meets ({check.reason})")
        elif (check.challenger - theirs.challenger) * (1.0 if HIGHER_IS_BETTER.get(check.metric, True) else -1.0) < 0:
            blockers.append(f"the challenger's {check.metric} {check.challenger:.4f} is worse than {champion}'s "
                            f"{theirs.challenger:.4f}")
    comparisons = spec.acceptance.champion
    extra = _superiority_checks(spec, evaluation, store, comparisons)
    compared = [c for c in checks if c.name.startswith("champion:")] + extra
    if not comparisons:
        blockers.append("the spec compares nothing with the champion (acceptance.champion is empty)")
    blockers += [f"not significantly better on {c.name} ({c.reason})" for c in compared if not c.passed]
    if blockers:
        return checks + extra, "not applied: " + "; ".join(blockers)
    waived = [check.model_copy(update={
        "passed": True, "status": "waived",
        "reason": f"{check.reason}; waived (degraded_champion: replace_if_better): {champion} misses this bar too "
                  f"({champion_values[check.name.removeprefix('threshold:')].challenger:.4f}) and the challenger is "
                  f"significantly better than it on every comparison"}) if check in missed else check
        for check in checks]
    return waived + extra, ("applied: the challenger is significantly better on every comparison and no worse on "
                            f"the bars it misses, so {', '.join(c.name for c in missed)} were waived")


def _superiority_checks(spec: ModelSpec, evaluation: EvaluationManifest, store: ArtifactStore,
                        comparisons: list[ComparisonSpec]) -> list[GateCheck]:
    """A superiority test (H0: not better) against the champion for each ``non_inferior`` comparison."""
    metrics = dict.fromkeys(c.metric for c in comparisons if c.mode == "non_inferior")
    wanted = [ComparisonSpec(metric=metric, mode="superior") for metric in metrics]
    if not wanted or evaluation.champion is None:
        return []
    frame = store.read_frame(evaluation.predictions_uri)
    tested = paired_tests(wanted, [f"degraded_champion:{c.metric}:superior" for c in wanted], spec.acceptance,
                          frame["label"].to_numpy(), frame[f"p_{evaluation.challenger}"].to_numpy(),
                          frame[CHAMPION_COLUMN].to_numpy(), frame["weight"].to_numpy(), evaluation.champion.name)
    return judge_promotion_family(tested, spec.acceptance.alpha)


def _champion_note(evaluation: EvaluationManifest, health: list[GateCheck], policy: str | None,
                   decision: str | None, verdict: str) -> str | None:
    """The paragraph the report opens with and the notification carries when the champion fails a bar."""
    failing = [c.reason for c in health if not c.passed]
    if not failing or evaluation.champion is None:
        return None
    opening = f"{evaluation.champion.name} fails its own bars on these test rows: {'; '.join(failing)}."
    if policy == "alert":
        return (f"{opening} Policy degraded_champion: alert, so nothing else changes: the challenger must clear "
                f"every check to replace it, and it {'did' if verdict == 'PASS' else 'did not'}.")
    return f"{opening} Policy degraded_champion: replace_if_better, {decision}."


def _may_fall_back(spec: ModelSpec, evaluation: EvaluationManifest) -> bool:
    return (evaluation.champion is None and evaluation.challenger != spec.baseline_name
            and spec.baseline_name in evaluation.models)


def gate_checks(spec: ModelSpec, evaluation: EvaluationManifest, store: ArtifactStore,
                backtest: BacktestManifest | None, challenger: str, recipes: Mapping[str, Recipe] | None = None,
                ) -> tuple[list[GateCheck], list[SliceRow], str | None]:
    """Every check of ``challenger`` (promotion tests judged), the slice rows and a Simpson warning."""
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
            consistency = consistency_check(spec, backtest, challenger, recipe, label, recipes)
            if consistency is not None:
                checks.append(consistency)
    checks.extend(guardrail_checks(spec, evaluation, challenger))
    return judge_promotion_family(checks, spec.acceptance.alpha), slice_rows, simpson


def _reference(spec: ModelSpec, evaluation: EvaluationManifest, challenger: str) -> tuple[str, str, str, str] | None:
    """(prediction column, label, role, backtest name) of what the challenger is compared with.

    The champion when there is one; otherwise the baseline candidate (unless the baseline
    itself is the challenger).
    """
    if evaluation.champion is not None:
        return CHAMPION_COLUMN, evaluation.champion.name, "champion", CHAMPION
    if challenger != spec.baseline_name:
        return f"p_{spec.baseline_name}", f"baseline {spec.baseline_name}", "baseline", spec.baseline_name
    return None
