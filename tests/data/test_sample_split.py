"""Stratified sampling keeps rare strata and reweights to the population; splits follow time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.columns import STREAM, WEIGHT
from ml_tasks.core.plan import make_plan
from ml_tasks.core.spec import ModelSpec
from ml_tasks.data.extract import extract_snapshot
from ml_tasks.data.sample import plan_quotas, run_sampling
from ml_tasks.data.split import time_split
from ml_tasks.data.validate import run_validation
from ml_tasks.io.store import store_from_settings
from tests.conftest import DEMO_SPEC


def population(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["web", "branch", "mobile"], rows, p=[0.7, 0.28, 0.02])
    rate = np.where(channel == "mobile", 0.2, 0.05)
    return pd.DataFrame({
        "t": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 300, rows)), unit="D"),
        "channel": channel, "y": (rng.random(rows) < rate).astype(int),
    })


def two_streams(spec: ModelSpec, include_dir, web_weight: float = 0.5, seed: int = 7) -> ModelSpec:
    """The demo spec reading two streams: web traffic and a curated set of the other channels."""
    sql = (include_dir / "sql" / "credit_default.sql").read_text().replace("ORDER BY", "{filter} ORDER BY")
    (include_dir / "sql" / "web.sql").write_text(sql.format(filter="AND a.channel = 'web'"))
    (include_dir / "sql" / "curated.sql").write_text(sql.format(filter="AND a.channel <> 'web'"))
    raw = spec.model_dump()
    raw["source"] = raw["source"] | {"query_file": None, "streams": [
        {"name": "web", "query_file": "sql/web.sql", "weight": web_weight},
        {"name": "curated", "query_file": "sql/curated.sql", "weight": 1 - web_weight}]}
    raw["sampling"] = raw["sampling"] | {"size": 2_000, "seed": seed}
    return ModelSpec.model_validate(raw)


def sample_of(spec: ModelSpec, settings, url: str, include_dir=None, as_of: str = "2024-03-01"):
    include_dir = include_dir or settings.include_dir
    store = store_from_settings(settings)
    plan = make_plan(spec, DEMO_SPEC, include_dir, store.layout, as_of)
    validation = run_validation(spec, plan, extract_snapshot(spec, plan, store, url, include_dir), store)
    manifest = run_sampling(spec, plan, validation, store)
    return manifest, store.read_frame(manifest.uri), store.read_frame(validation.snapshot.uri)


def test_sample_keeps_rare_strata_and_reweights_exactly_to_the_population(demo_spec, refit_home, tiny_warehouse_url):
    spec = demo_spec.model_copy(update={"sampling": demo_spec.sampling.model_copy(update={"size": 1_500})})
    manifest, sample, snapshot = sample_of(spec, refit_home, tiny_warehouse_url)
    assert manifest.rows == len(sample) == 1_500 and manifest.population_rows == len(snapshot)
    # Rare strata keep their floor (or everything they have) ...
    sampled = sample.groupby(["defaulted", "channel"]).size()
    for stratum, rows in snapshot.groupby(["defaulted", "channel"]).size().items():
        assert sampled[stratum] >= min(rows, spec.sampling.min_per_stratum)
    assert sampled.min() < len(sample) * (snapshot.groupby(["defaulted", "channel"]).size().min() / len(snapshot)) * 50
    # ... and the weights carry them back: stratifying on the label makes the rate exact.
    assert np.isclose(sample[WEIGHT].sum(), len(snapshot))
    assert np.isclose(manifest.label_rate_reweighted, snapshot.defaulted.mean())
    assert sample.applied_at.is_monotonic_increasing  # time order kept for the split
    assert 0 < manifest.peak_buffer_rows <= 3 * manifest.rows


def test_stream_draw_follows_the_weights_within_multinomial_error():
    from ml_tasks.core.spec import load_spec

    base = load_spec(DEMO_SPEC)
    counts = {(stream, label, channel): 50_000 for stream in ("web", "curated") for label in (0, 1)
              for channel in ("web", "branch")}
    size, weight, draws = 1_000, 0.3, []
    for seed in range(300):
        raw = base.model_dump()
        raw["source"] = raw["source"] | {"query_file": None, "streams": [
            {"name": "web", "query_file": "a.sql", "weight": weight}, {"name": "curated", "query_file": "b.sql",
                                                                         "weight": 1 - weight}]}
        raw["sampling"] = raw["sampling"] | {"seed": seed, "min_per_stratum": 1}
        quotas, drawn = plan_quotas(ModelSpec.model_validate(raw), counts, size)
        assert sum(quotas.values()) == size and drawn["web"] + drawn["curated"] == size
        assert sum(n for key, n in quotas.items() if key[0] == "web") == drawn["web"]
        draws.append(drawn["web"])
    # The draw is a real multinomial: its mean and spread match Binomial(size, weight).
    standard_error = np.sqrt(size * weight * (1 - weight))
    assert abs(np.mean(draws) - size * weight) < 4 * standard_error / np.sqrt(len(draws))
    assert 0.8 < np.std(draws) / standard_error < 1.2


def test_two_weighted_streams_give_the_asked_mix_and_record_it(demo_spec, refit_home, tiny_warehouse_url, tmp_path):
    import shutil

    include = tmp_path / "include"
    shutil.copytree(refit_home.include_dir, include)
    spec = two_streams(demo_spec, include, web_weight=0.8)
    manifest, sample, snapshot = sample_of(spec, refit_home, tiny_warehouse_url, include)
    web_population = (snapshot[STREAM] == "web").mean()
    assert web_population < 0.6  # web is about half of the traffic ...
    mix = manifest.stream_mix
    assert set(mix) == {"web", "curated"} and np.isclose(mix["web"]["weight"], 0.8)
    share = (sample[STREAM] == "web").mean()
    assert np.isclose(mix["web"]["share"], share) and mix["web"]["sampled"] == (sample[STREAM] == "web").sum()
    # ... but the sample holds what the weights ask, within binomial error of one draw.
    assert abs(share - 0.8) < 4 * np.sqrt(0.8 * 0.2 / len(sample))
    # Reweighted, each stream carries its weight of the population's rows.
    weights = sample.groupby(STREAM)[WEIGHT].sum() / sample[WEIGHT].sum()
    assert np.isclose(weights["web"], 0.8) and np.isclose(weights["curated"], 0.2)
    assert set(snapshot[STREAM]) == {"web", "curated"}


def test_importance_weights_draw_heavier_rows_and_stay_unbiased(demo_spec, refit_home, tiny_warehouse_url):
    sampling = demo_spec.sampling.model_copy(update={"size": 1_000, "importance_weight": "amount"})
    manifest, sample, snapshot = sample_of(demo_spec.model_copy(update={"sampling": sampling}), refit_home,
                                           tiny_warehouse_url)
    assert manifest.importance_weight == "amount"
    # Large loans are over-represented in the sample; the weights undo it.
    assert sample.amount.mean() > 1.1 * snapshot.amount.mean()
    estimate = np.average(sample.amount, weights=sample[WEIGHT])
    assert abs(estimate - snapshot.amount.mean()) < 0.05 * snapshot.amount.mean()


def test_time_split_is_chronological_disjoint_and_complete():
    frame = population()
    parts = time_split(frame, "t", validation_fraction=0.15, test_fraction=0.25)
    assert sum(len(p) for p in parts.values()) == len(frame)
    assert parts["train"].t.max() < parts["validation"].t.min()
    assert parts["validation"].t.max() < parts["test"].t.min()
    assert abs(len(parts["test"]) / len(frame) - 0.25) < 0.02


def leaky_parts():
    train = pd.DataFrame({"customer_id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "c": ["a", "b", "a"], "y": [0, 1, 0]})
    validation = pd.DataFrame({"customer_id": [3, 4], "x": [0.3, 0.9], "c": ["a", "b"], "y": [0, 1]})
    test = pd.DataFrame({"customer_id": [5, 6], "x": [0.5, 0.6], "c": ["b", "b"], "y": [0, 0]})
    return {"train": train, "validation": validation, "test": test}


def leak_spec(demo_spec, **policy):
    return demo_spec.model_copy(update={
        "features": demo_spec.features.model_copy(update={"numeric": ["x"], "categorical": ["c"]}),
        "columns": demo_spec.columns.model_copy(update={"label": "y"}),
        "leakage": demo_spec.leakage.model_copy(update=policy),
    })


def test_entity_overlap_and_duplicate_rows_are_counted_with_the_spec_policy(demo_spec):
    from ml_tasks.data.split import leakage_findings

    findings = leakage_findings(leak_spec(demo_spec, entity_overlap="warn", duplicate_rows="fail"), leaky_parts())
    overlap = "column 'customer_id': 1 entities (1 of 2 rows) of the validation split also appear in train"
    assert ("warn", overlap) in findings
    assert any(policy == "fail" and "1 of 2 rows of the validation split repeat a train row" in message
               for policy, message in findings)
    assert not any("test split" in message for _, message in findings)
    assert leakage_findings(leak_spec(demo_spec, entity_overlap="ignore", duplicate_rows="ignore"), leaky_parts()) == []


def test_fitted_transforms_see_only_the_training_split(demo_spec):
    """Scale leakage: scaler statistics and category vocabularies come from train alone."""
    from ml_tasks.models import build_candidate, feature_frame

    rng = np.random.default_rng(0)
    train = pd.DataFrame({name: rng.normal(10, 2, 500) for name in demo_spec.features.numeric})
    for name in demo_spec.features.categorical:
        train[name] = rng.choice(["a", "b"], 500)
    y = rng.integers(0, 2, 500)
    test = train.assign(income=train.income + 1_000, channel="only_in_test")
    logistic = build_candidate(demo_spec.candidate("logistic_baseline"), demo_spec.features)
    logistic.fit(feature_frame(train, demo_spec.features), y)
    scaler = logistic.pipeline_.named_steps["columns"].named_transformers_["numeric"][-1]
    assert scaler.mean_[demo_spec.features.numeric.index("income")] == pytest.approx(train.income.mean())
    lgbm = build_candidate(demo_spec.candidate("lightgbm"), demo_spec.features)
    lgbm.fit(feature_frame(train, demo_spec.features), y)
    assert lgbm.categories_["channel"] == ["a", "b"]
    # Unseen test values do not change the fitted state; they are scored, not learned.
    before = scaler.mean_.copy()
    logistic.predict_proba(feature_frame(test, demo_spec.features))
    lgbm.predict_proba(feature_frame(test, demo_spec.features))
    assert np.array_equal(scaler.mean_, before) and lgbm.categories_["channel"] == ["a", "b"]
