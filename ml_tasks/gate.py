"""The gate: may the challenger replace the champion?

Two kinds of checks, each recorded with values, interval, p-value, threshold and a reason:

* absolute thresholds from the spec on the challenger's test metrics;
* a paired comparison with the champion on the *same* test rows. A Poisson bootstrap
  (each row weighted by its sample weight times Poisson(1)) gives the distribution of the
  difference; ``non_inferior`` passes when the one-sided lower bound of the improvement is
  above ``-margin``, ``superior`` when it is above zero.

With no champion yet, the same paired comparison is made against the baseline candidate.
"""

from __future__ import annotations

import numpy as np

from ml_tasks.evaluate import CHAMPION_COLUMN
from ml_tasks.manifests import EvaluationManifest, GateCheck, GateManifest, RunPlan
from ml_tasks.metrics import row_losses, weighted_mean_loss, weighted_roc_auc
from ml_tasks.spec import HIGHER_IS_BETTER, ChampionComparisonSpec, ModelSpec
from ml_tasks.storage import ArtifactStore


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


def bootstrap_metric(metric: str, y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric under each row of ``weights`` (shape ``(replicates, n)``)."""
    if metric == "roc_auc":
        return weighted_roc_auc(p, y, weights)
    return weighted_mean_loss(row_losses(metric, y, p), weights)


def paired_comparison(
    comparison: ChampionComparisonSpec, y: np.ndarray, p_challenger: np.ndarray, p_champion: np.ndarray,
    weights: np.ndarray, reference_label: str, role: str = "champion",
) -> GateCheck:
    """Paired Poisson bootstrap of the improvement (challenger over champion) in one metric."""
    metric, margin = comparison.metric, comparison.margin
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    rng = np.random.default_rng(comparison.seed)
    replicate_weights = weights * rng.poisson(1.0, size=(comparison.bootstrap_replicates, len(y)))
    full = weights[None, :]
    value_challenger = float(bootstrap_metric(metric, y, p_challenger, full)[0])
    value_champion = float(bootstrap_metric(metric, y, p_champion, full)[0])
    # The same replicate weights for both models: that is what makes the comparison paired.
    improvement = sign * (bootstrap_metric(metric, y, p_challenger, replicate_weights)
                          - bootstrap_metric(metric, y, p_champion, replicate_weights))
    observed = sign * (value_challenger - value_champion)
    low, high = np.quantile(improvement, [comparison.alpha, 1 - comparison.alpha])
    bar = -margin if comparison.mode == "non_inferior" else 0.0
    # One-sided bootstrap p-value of H0: improvement <= bar (shifted to be centred on the bar).
    p_value = float((1 + np.sum(improvement - observed + bar >= observed)) / (1 + len(improvement)))
    passed = bool(low > bar)
    what = (f"not worse than {reference_label} by more than {margin}" if comparison.mode == "non_inferior"
            else f"better than {reference_label}")
    reason = (f"{metric} improvement {observed:+.4f} (one-sided {1 - comparison.alpha:.0%} lower bound {low:+.4f}) "
              f"{'shows' if passed else 'does not show'} the challenger is {what}")
    return GateCheck(
        name=f"{role}:{metric}:{comparison.mode}", metric=metric, challenger=value_challenger,
        reference=value_champion, difference=observed, ci_low=float(low), ci_high=float(high), p_value=p_value,
        threshold=bar, passed=passed, reason=reason,
    )


def run_gate(spec: ModelSpec, plan: RunPlan, evaluation: EvaluationManifest, store: ArtifactStore) -> GateManifest:
    scores = {s.name: s.metrics for s in evaluation.candidates}
    checks = threshold_checks(spec, scores[evaluation.challenger])
    reference = _reference(spec, evaluation)
    if reference is not None:
        column, label, role = reference
        frame = store.read_frame(evaluation.predictions_uri)
        checks.append(paired_comparison(
            spec.acceptance.champion, frame["label"].to_numpy(), frame[f"p_{evaluation.challenger}"].to_numpy(),
            frame[column].to_numpy(), frame["weight"].to_numpy(), label, role,
        ))
    verdict = "PASS" if all(c.passed for c in checks) else "FAIL"
    manifest = GateManifest(verdict=verdict, challenger=evaluation.challenger,
                            champion_version=evaluation.champion_version, checks=checks, uri=f"{plan.run_prefix}/gate.json")
    store.write_json(manifest.uri, manifest.to_xcom())
    return manifest


def _reference(spec: ModelSpec, evaluation: EvaluationManifest) -> tuple[str, str, str] | None:
    """(prediction column, label, role) of what the challenger is compared with, if anything.

    The champion when there is one; otherwise the baseline candidate (unless the baseline
    itself is the challenger), with the same test and margin.
    """
    if evaluation.champion is not None:
        return CHAMPION_COLUMN, evaluation.champion.name, "champion"
    if evaluation.challenger != spec.baseline_name:
        return f"p_{spec.baseline_name}", f"baseline {spec.baseline_name}", "baseline"
    return None
