"""The policy replay's bookkeeping (bench/policy_replay.py, what bench/bench_policy.py runs).

The arithmetic is checked on hand-made predictions where every answer is known; then a two-step
replay runs the real pipeline on a tiny warehouse whose drift makes the answer known too: a model
trained before a new, riskier channel opened, kept by ``never``, against the one ``always`` trains
once the channel's rows are in its training window.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import policy_replay as replay
from bench import shift_warehouse
from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.core.spec import ModelSpec
from tests.conftest import isolated_env

SHIFT_SPEC = shift_warehouse.SPECS / f"{shift_warehouse.MODEL}.yaml"


# ---------------------------------------------------------------------------------------------
# Arithmetic on known predictions
# ---------------------------------------------------------------------------------------------

def test_step_dates_keep_whole_windows_and_cron_fires_once_per_month():
    steps = replay.step_dates(datetime(2024, 1, 1, 4), datetime(2024, 2, 20), 7)
    assert steps[0] == datetime(2024, 1, 1, 4) and steps[-1] == datetime(2024, 2, 12, 4)  # its window ends Feb 19
    due = [replay.cron_due("0 3 1 * *", before, after) for before, after in zip(steps, steps[1:], strict=False)]
    assert due == [False, False, False, False, True, False]  # Feb 1 03:00 falls in (Jan 29, Feb 5]
    assert not any(replay.cron_due("@once", before, after) for before, after in zip(steps, steps[1:], strict=False))
    assert replay.cron_due("@weekly", steps[0], steps[1])


def test_window_index_puts_each_row_in_the_step_it_was_served_in():
    steps = [datetime(2024, 1, 1), datetime(2024, 1, 8), datetime(2024, 1, 15)]
    moments = pd.Series(pd.to_datetime(["2023-12-31 23:59", "2024-01-01 00:00", "2024-01-07 23:59",
                                        "2024-01-08 00:00", "2024-01-21 23:59", "2024-01-22 00:00"]))
    assert replay.window_index(moments, steps, 7).tolist() == [-1, 0, 0, 1, 2, -1]


def test_served_scores_use_the_model_served_in_each_window():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0], dtype=float)
    windows = np.array([0, 0, 0, 0, 1, 1, 1, -1])
    good = np.array([0.1, 0.9, 0.2, 0.8, 0.1, 0.9, 0.2, 0.5])
    bad = 1 - good
    scores = replay.served_scores(y, windows, ["good", "bad"], {"good": good, "bad": bad})
    assert scores.rows.tolist() == [4, 3]
    assert scores.log_loss[0] == pytest.approx(np.mean(-np.log([0.9, 0.9, 0.8, 0.8])))
    assert scores.log_loss[1] == pytest.approx(np.mean(-np.log([0.1, 0.1, 0.2])))
    assert scores.roc_auc.tolist() == [1.0, 0.0]
    assert scores.mean_log_loss == pytest.approx((4 * scores.log_loss[0] + 3 * scores.log_loss[1]) / 7)
    assert scores.mean_roc_auc == pytest.approx(4 / 7)


def test_oracle_serves_the_better_of_its_model_and_the_new_ones_on_the_coming_window():
    losses = {"a": np.array([0.30, 0.30, 0.30, 0.30]), "b": np.array([9, 0.20, 0.35, 0.35]),
              "c": np.array([9, 9, 0.32, 0.32]), "d": np.array([9, 9, 9, 0.30])}
    trained = [["a"], ["b"], ["c"], ["d"]]
    # Step 1: b beats a. Step 2: c (0.32) beats b (0.35) although a, dropped at step 1, would beat
    # both: the oracle only keeps or replaces. Step 3: a tie with d keeps c? No: c 0.32 > d 0.30.
    assert replay.oracle_choice(trained, losses) == ["a", "b", "c", "d"]
    tied = {"a": np.array([0.3, 0.3]), "b": np.array([9, 0.3])}
    assert replay.oracle_choice([["a"], ["b"]], tied) == ["a", "a"]  # a tie keeps the model served
    with pytest.raises(ValueError, match="no model to serve"):
        replay.oracle_choice([[]], {})


def test_a_promotion_is_wrong_only_when_worse_beyond_noise():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(float)
    sharp = np.clip(np.where(y == 1, 0.6, 0.1) + rng.normal(0, 0.02, len(y)), 0.01, 0.99)
    blurred = np.clip(0.7 * sharp + 0.3 * 0.2, 0.01, 0.99)
    twin = np.clip(np.where(y == 1, 0.6, 0.1) + rng.normal(0, 0.02, len(y)), 0.01, 0.99)  # as good, other noise
    windows = np.repeat([0, 1], len(y) // 2)
    predictions = {"sharp": sharp, "blurred": blurred, "twin": twin}
    worse = replay.promotions(y, windows, ["sharp", "blurred"], predictions)
    assert len(worse) == 1 and worse[0].step == 1 and worse[0].worse and worse[0].wrong
    better = replay.promotions(y, windows, ["blurred", "sharp"], predictions)
    assert not better[0].worse and not better[0].wrong
    alike = replay.promotions(y, windows, ["sharp", "twin"], predictions)
    assert abs(alike[0].z) < replay.WRONG_Z and not alike[0].wrong
    assert replay.promotions(y, windows, ["sharp", "sharp"], predictions) == []


def test_recovery_counts_the_steps_until_the_excess_loss_is_back():
    rng = np.random.default_rng(1)
    steps = [datetime(2024, 1, 1) + timedelta(days=7 * t) for t in range(8)]
    windows = np.repeat(np.arange(8), 3000)
    truth = np.full(len(windows), 0.2)
    y = (rng.random(len(windows)) < truth).astype(float)
    fresh, stale = np.full(len(y), 0.21), np.full(len(y), 0.35)
    predictions = {"fresh": fresh, "stale": stale}
    drift = datetime(2024, 1, 25)  # inside window 3; window 4 (Jan 29) is the first after it
    served = ["fresh"] * 4 + ["stale", "stale", "fresh", "fresh"]
    found = replay.recovery(y, truth, windows, steps, served, predictions, drift)
    assert found.hit and found.step == 6 and found.steps_after == 3 and found.days == pytest.approx(18.0)
    never = replay.recovery(y, truth, windows, steps, ["fresh"] * 4 + ["stale"] * 4, predictions, drift)
    assert never.hit and never.step is None and never.days is None


# ---------------------------------------------------------------------------------------------
# The policies are spec variants, and the point gate is the point estimate
# ---------------------------------------------------------------------------------------------

def test_policy_specs_are_valid_variants_of_the_base():
    base = yaml.safe_load(SHIFT_SPEC.read_text())
    specs = {policy: ModelSpec.model_validate(replay.policy_spec(base, policy)) for policy in replay.POLICIES}
    assert specs["refit"].monitoring is not None and specs["refit"].acceptance.champion
    assert all(specs[p].monitoring is None for p in ("always", "point", "never"))
    assert specs["always"].acceptance.champion == [] and specs["always"].acceptance.thresholds == {}
    assert specs["never"].schedule == "@once"
    ablation = ModelSpec.model_validate(replay.policy_spec(base, "refit_tuned"))
    assert [c.metric for c in ablation.acceptance.champion] == [c.metric for c in specs["refit"].acceptance.champion
                                                                 if c.metric != "accuracy"]
    assert ablation.monitoring == specs["refit"].monitoring
    assert ablation.acceptance.degraded_champion == "replace_if_better"
    assert all(spec.scoring is None for spec in specs.values())
    assert base == yaml.safe_load(SHIFT_SPEC.read_text())  # the base is not changed


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss"])
def test_the_point_policy_gate_passes_exactly_when_the_point_estimate_does(metric):
    from ml_tasks.gating.gate import judge_promotion_family, paired_tests

    base = yaml.safe_load(SHIFT_SPEC.read_text())
    acceptance = ModelSpec.model_validate(replay.policy_spec(base, "point")).acceptance
    comparison = next(c for c in acceptance.champion if c.metric == metric)
    rng = np.random.default_rng(3)
    agreed, decided = 0, 0
    for trial in range(40):
        y = (rng.random(3000) < 0.15).astype(float)
        signal = np.where(y == 1, 1.0, 0.0) + rng.normal(0, 1.2, len(y))
        champion = 1 / (1 + np.exp(-(signal - 1.5)))
        challenger = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.3 + 0.02 * trial, len(y)) - 1.5)))
        check = judge_promotion_family(paired_tests([comparison], ["c"], acceptance, y, challenger, champion,
                                                    np.ones(len(y)), "champion"), acceptance.alpha)[0]
        if abs(check.difference) < 1e-4:
            continue  # within 0.003 standard errors of a tie: the test may go either way
        decided += 1
        agreed += check.passed == (check.difference > 0)
    assert decided >= 30 and agreed == decided


def test_the_always_policy_promotes_a_worse_first_model_too():
    from ml_tasks.gating.gate import paired_tests

    base = yaml.safe_load(SHIFT_SPEC.read_text())
    acceptance = ModelSpec.model_validate(replay.policy_spec(base, "always")).acceptance
    y = np.array([0, 1] * 200, dtype=float)
    good, bad = np.where(y == 1, 0.8, 0.2), np.full(len(y), 0.5)
    check = paired_tests([acceptance.baseline], ["b"], acceptance, y, bad, good, np.ones(len(y)), "baseline")[0]
    assert check.difference < -0.2 and check.p_value is not None and check.p_value <= acceptance.alpha


# ---------------------------------------------------------------------------------------------
# A real two-step replay
# ---------------------------------------------------------------------------------------------

STEPS = [datetime(2024, 1, 1, 4), datetime(2024, 6, 1, 4)]
STEP_DAYS = 30


def _tiny_spec(policy: str) -> dict:
    spec = replay.policy_spec(yaml.safe_load(SHIFT_SPEC.read_text()), policy)
    spec["candidates"] = spec["candidates"][:1]  # the logistic baseline alone
    spec["sampling"].update({"size": 3000, "min_per_stratum": 100})
    spec["backtest"].update({"folds": 2, "staleness_periods": 1})
    spec["acceptance"].update({"bootstrap_replicates": 100})
    spec["training"] = {"learning_curve": False}
    return spec


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """``always`` and ``never`` replayed over STEPS on a tiny shift warehouse, and the rows they served."""
    root = tmp_path_factory.mktemp("policy")
    url = f"sqlite:///{root / 'warehouse.db'}"
    shift_warehouse.build_shift_warehouse(url, rows_per_day=40, seed=5)
    results, predictions = {}, {}
    rows = None
    for policy in ("always", "never"):
        include = root / policy / "include"
        shutil.copytree(REPO_ROOT / "include" / "templates", include / "templates")
        spec_path = shift_warehouse.write_include(include)
        spec_path.write_text(yaml.safe_dump(_tiny_spec(policy)))
        with pytest.MonkeyPatch.context() as patch:
            isolated_env(patch, root / policy / "home")
            patch.setenv("REFIT_INCLUDE_DIR", str(include))
            patch.setenv("REFIT_WAREHOUSE_URL", url)
            refit = replay.RefitPipeline(spec_path)
            steps, models = replay.replay(_tiny_spec(policy)["schedule"], False, STEPS, refit)
            if rows is None:
                rows = _served_rows(spec_path, url)
            results[policy] = steps
            predictions.update({f"{policy}:{key}": p for key, p in refit.score(models, rows).items()})
    return results, predictions, rows, url


def _served_rows(spec_path: Path, url: str) -> pd.DataFrame:
    import pyarrow as pa

    from ml_tasks.core.spec import load_spec
    from ml_tasks.monitoring.monitor import window_batches

    spec = load_spec(spec_path)
    batches = window_batches(spec, url, spec_path.parents[1], STEPS[0], datetime(2025, 6, 1))
    return pa.Table.from_batches(list(batches)).to_pandas()


def test_each_policy_serves_what_its_spec_says(replayed):
    results, _, _, _ = replayed
    always, never = results["always"], results["never"]
    assert [s.action for s in always] == ["first", "cron"] and [s.action for s in never] == ["first", ""]
    assert all(s.verdict == "PASS" for s in always) and never[0].verdict == "PASS"
    assert [s.served for s in always] == [s.challenger for s in always]  # always replace: the new model serves
    assert always[0].served != always[1].served
    assert never[1].served == never[0].served and never[1].challenger is None  # never: the first model, kept
    assert never[0].cpu_s > 0 and never[1].cpu_s == 0


def test_windows_hold_every_row_applied_in_them_scored_by_the_model_then_served(replayed):
    results, predictions, rows, _ = replayed
    windows = replay.window_index(rows["applied_at"], STEPS, STEP_DAYS)
    generated = shift_warehouse.generate(rows_per_day=40, seed=5)["shift_applications"]
    bounds = [*STEPS, STEPS[-1] + timedelta(days=STEP_DAYS)]
    expected = [int(generated["applied_at"].between(begin, end, inclusive="left").sum())
                for begin, end in zip(bounds, bounds[1:], strict=False)]
    assert np.bincount(windows[windows >= 0]).tolist() == expected  # every row: its label has matured since
    y = rows["defaulted"].to_numpy(dtype=float)
    served = [f"always:{step.served}" for step in results["always"]]
    scores = replay.served_scores(y, windows, served, predictions)
    for t, key in enumerate(served):
        inside = rows["applied_at"].between(bounds[t], bounds[t + 1], inclusive="left").to_numpy()
        assert scores.log_loss[t] == pytest.approx(replay.log_losses(y[inside], predictions[key][inside]).mean())
        assert scores.rows[t] == expected[t]


def test_after_the_drift_the_new_model_serves_better_and_the_oracle_picks_it(replayed):
    results, predictions, rows, _ = replayed
    windows = replay.window_index(rows["applied_at"], STEPS, STEP_DAYS)
    y = rows["defaulted"].to_numpy(dtype=float)
    served = {policy: [f"{policy}:{s.served}" for s in steps] for policy, steps in results.items()}
    kept, fresh = served["never"][1], served["always"][1]
    late = windows == 1
    assert (rows.loc[late, "channel"] == "app").mean() > 0.3  # the new channel's rows, unknown to the first model
    quality = {policy: replay.served_scores(y, windows, keys, predictions) for policy, keys in served.items()}
    assert quality["always"].log_loss[1] < quality["never"].log_loss[1]
    trained = [[f"{policy}:{steps[t].challenger}" for policy, steps in results.items() if steps[t].challenger]
               for t in range(len(STEPS))]
    losses = {key: replay.window_losses(y, windows, len(STEPS), predictions[key]) for key in {k for t in trained
                                                                                            for k in t}}
    oracle = replay.oracle_choice(trained, losses)
    assert oracle[1] == fresh and oracle[1] != kept
    assert losses[oracle[0]][0] == min(losses[key][0] for key in trained[0])
