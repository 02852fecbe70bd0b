"""Shadow scoring's two ends: which model scores in shadow (a refused challenger when no version
was registered after the champion), and how it compares with the champion once labels mature."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml_tasks.core.manifests import ScoredTable, ScoringManifest
from ml_tasks.core.settings import REPO_ROOT
from ml_tasks.scoring.plan import gated_challenger
from ml_tasks.scoring.shadow import compare_shadow

RUN_KEY = "20240901T000000-1d84bea9"
REPORT = {"plan": {"run_key": RUN_KEY},
          "gate": {"challenger_model": {"candidate": "lightgbm", "run_id": "r1", "model_uri": "models:/m-abc"}}}


def test_the_challenger_a_gate_refused_is_the_shadow_model_named_by_its_run_and_candidate():
    gated = gated_challenger({"verdict": "FAIL", "run_key": RUN_KEY}, REPORT)
    assert gated is not None
    assert (gated.version, gated.model_uri, gated.trained_run_key) == (f"{RUN_KEY}/lightgbm", "models:/m-abc", RUN_KEY)


@pytest.mark.parametrize("verdict", [{"verdict": "PASS", "run_key": RUN_KEY}, None])
def test_a_promoted_or_missing_verdict_gives_no_gated_shadow(verdict):
    assert gated_challenger(verdict, REPORT) is None


def manifest(rows: int) -> ScoringManifest:
    return ScoringManifest(
        model="m", run_key="20240901T000000-abcd1234", as_of=datetime(2024, 9, 1), window_start=datetime(2024, 8, 1),
        rows=rows, served=ScoredTable(table="s", version="1", rows=rows, replaced=0),
        shadow=ScoredTable(table="s_shadow", version=f"{RUN_KEY}/lightgbm", rows=rows, replaced=0),
        scored_at=datetime(2024, 9, 1), seconds=1.0, engine="sqlalchemy", uri="mem://m")


def test_a_shadow_that_ranks_better_shows_a_positive_auc_difference_on_the_matured_rows_only():
    rng = np.random.default_rng(3)
    n = 4_000
    label = rng.random(n) < 0.2
    signal = label + rng.normal(0, 1.0, n)
    served = pd.DataFrame({"id": np.arange(n), "score": 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, n)))),
                           "model_version": "1"})
    shadow = pd.DataFrame({"id": np.arange(n), "score": 1 / (1 + np.exp(-signal)), "model_version": "x"})
    # Only the first half has matured labels; the rest are not in the snapshot yet.
    labelled = pd.DataFrame({"id": np.arange(n // 2), "label": label[: n // 2].astype(int)})

    section = compare_shadow(manifest(n), served, shadow, labelled)

    assert section["matured_rows"] == n // 2 and section["scored_rows"] == n
    assert section["shadow"]["roc_auc"] > section["champion"]["roc_auc"]
    assert section["roc_auc_difference"] > 0 and section["roc_auc_ci"][0] > 0 and section["roc_auc_p_value"] < 0.05


def test_too_few_matured_rows_are_said_rather_than_compared():
    served = pd.DataFrame({"id": [1, 2, 3], "score": [0.1, 0.2, 0.3], "model_version": "1"})
    section = compare_shadow(manifest(3), served, served.assign(model_version="x"),
                             pd.DataFrame({"id": [1, 2], "label": [0, 1]}))
    assert "2 of the 3 scored rows have matured labels" in section["note"] and "champion" not in section


@pytest.mark.e2e
def test_the_next_report_compares_the_refused_challengers_shadow_scores_with_the_champions(
        refit_home, tiny_warehouse_url, monkeypatch, tmp_path):
    """The whole loop through the CLI: v1 champion; a gate refuses the next challenger; scoring
    scores with both; a later run's report compares them on the rows whose labels matured."""
    monkeypatch.setenv("REFIT_WAREHOUSE_URL", tiny_warehouse_url)

    def cli(*args: str, include: Path | None = None) -> dict:
        env = {**os.environ, **({"REFIT_INCLUDE_DIR": str(include)} if include else {})}
        done = subprocess.run([sys.executable, "-m", "ml_tasks", *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    baseline_only = ("--candidates", "logistic_baseline", "--sample-size", "2000")
    assert cli("run", "--model", "credit_default", "--as-of", "2024-03-01", *baseline_only)["verdict"] == "PASS"
    # A bar no model reaches: the gate refuses what it puts forward, and the champion stays v1.
    strict = tmp_path / "include"
    shutil.copytree(REPO_ROOT / "include", strict)
    spec_file = strict / "models" / "credit_default.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["acceptance"]["thresholds"]["roc_auc"] = {"min": 0.99}
    spec["scoring"]["window_days"] = 92
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    refused = cli("run", "--model", "credit_default", "--as-of", "2024-06-01", *baseline_only, include=strict)
    assert refused["verdict"] == "FAIL"

    scored = cli("score", "--model", "credit_default", "--as-of", "2024-06-01", include=strict)
    assert scored["shadow"]["version"] == f"{refused['run_key']}/logistic_baseline", scored
    later = cli("run", "--model", "credit_default", "--as-of", "2024-11-01", *baseline_only, include=strict)

    shadow = json.loads(Path(later["json_uri"]).read_text())["shadow"]
    assert shadow["champion_version"] == "1" and shadow["shadow_version"] == scored["shadow"]["version"]
    assert shadow["matured_rows"] >= 200 and "roc_auc_p_value" in shadow, shadow
    assert "shadow scoring" in Path(later["html_uri"]).read_text()
