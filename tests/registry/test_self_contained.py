"""A registered Refit model is self-contained: in a fresh virtualenv holding only the packages of
its own ``requirements.txt`` (installed with pip, nothing of this repository, run from outside
it), stock MLflow loads ``models:/<name>@champion`` for every family and predicts what Refit
predicts, and ``mlflow models serve`` answers ``POST /invocations`` with the input example.

Slow (a virtualenv and a pip install of MLflow, from pip's cache when warm): marker ``e2e``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.core.spec import CandidateSpec
from ml_tasks.models import build_candidate
from ml_tasks.models.calibrators import CalibratedCandidate, make_calibrator
from ml_tasks.registry.pyfunc import log_served_model
from ml_tasks.registry.tracking import model_requirements
from tests.models.network.demo_data import FAST, FEATURES, time_split

pytestmark = pytest.mark.e2e

#: One registered model per family, each with another calibrator, so every served path is loaded.
FAMILIES = {
    "logistic_regression": ({"C": 1.0}, "sigmoid"),
    "lightgbm": ({"n_estimators": 60, "num_leaves": 7}, "isotonic"),
    "torch_mlp": ({**FAST, "max_epochs": 2}, "temperature"),
    "prior": ({}, "none"),
}
LOAD_SCRIPT = """
import json, sys
import mlflow, pandas as pd
try:
    import ml_tasks
except ImportError:
    pass
else:
    sys.exit("ml_tasks is importable in the serving environment: the test proves nothing")
probe = pd.read_parquet(sys.argv[1])
served = {}
for name in sys.argv[2:]:
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    served[name] = model.predict(probe)["probability"].tolist()
print(json.dumps(served))
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Every family trained, calibrated and registered as ``refit_<family>`` with the champion
    alias in a SQLite tracking store; what Refit predicts for the probe rows."""
    import mlflow
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("self-contained")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("self-contained", artifact_location=(folder / "artifacts").as_uri())
    (X, y), (Xv, yv), (X_test, _) = time_split(3_000)
    probe = X_test.head(200).reset_index(drop=True)
    probe.loc[:4, "income"], probe.loc[5:8, "region"] = np.nan, None
    expected, requirements = {}, set()
    client = MlflowClient(uri)
    for family, (params, method) in FAMILIES.items():
        candidate = build_candidate(CandidateSpec(name=family, family=family, params=params), FEATURES, seed=1)
        candidate.fit(X, y, None, Xv, yv, None)
        p_valid = candidate.predict_proba(Xv)[:, 1]
        model = CalibratedCandidate(candidate, make_calibrator(method).fit(p_valid, yv, np.ones(len(yv))))
        with mlflow.start_run(experiment_id=experiment):
            info = log_served_model(model, input_example=Xv.head(5), example_probability=p_valid[:5],
                                    pip_requirements=model_requirements(family))
        name = f"refit_{family}"
        version = mlflow.register_model(info.model_uri, name)
        client.set_registered_model_alias(name, "champion", version.version)
        expected[name] = model.predict_proba(probe)[:, 1]
        requirements |= set(Path(mlflow.artifacts.download_artifacts(
            f"models:/{name}@champion/requirements.txt", dst_path=str(folder / name))).read_text().split())
    probe.to_parquet(folder / "probe.parquet")
    mlflow.set_tracking_uri(None)
    return {"uri": uri, "folder": folder, "expected": expected, "requirements": sorted(requirements),
            "probe": probe}


@pytest.fixture(scope="module")
def clean_env(registered, tmp_path_factory):
    """A virtualenv from the base interpreter with the models' requirements only, used from a
    folder outside the repository with no PYTHONPATH."""
    venv = tmp_path_factory.mktemp("serving-venv") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                *registered["requirements"]], capture_output=True, text=True, timeout=1500)
    assert installed.returncode == 0, f"pip install {registered['requirements']} failed:\n{installed.stderr[-4000:]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW"))}
    env.update(MLFLOW_TRACKING_URI=registered["uri"], PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    return python, env


def test_the_requirements_name_only_pypi_packages_pinned_to_the_training_versions(registered):
    names = {r.split("==")[0] for r in registered["requirements"]}
    assert names == {"mlflow", "numpy", "pandas", "lightgbm"}, registered["requirements"]
    assert all("==" in r for r in registered["requirements"]), registered["requirements"]


def test_every_family_loads_from_its_alias_in_a_clean_environment_and_predicts_what_refit_predicts(
        registered, clean_env):
    python, env = clean_env
    names = list(registered["expected"])
    done = subprocess.run([str(python), "-c", LOAD_SCRIPT, str(registered["folder"] / "probe.parquet"), *names],
                          cwd=registered["folder"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    for name in names:
        np.testing.assert_allclose(served[name], registered["expected"][name], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name} served other probabilities than Refit computed")


def test_mlflow_models_serve_answers_invocations_with_the_input_example(registered, clean_env):
    python, env = clean_env
    name = "refit_lightgbm"
    port = _free_port()
    log_path = registered["folder"] / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(python), "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=registered["folder"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_ping(port, server, log_path)
        example = json.loads(Path(_download(registered, name, "serving_input_example.json")).read_text())
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(example).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(30)
    frame = pd.DataFrame(**example["dataframe_split"])
    import mlflow

    from ml_tasks.registry.pyfunc import load_pyfunc, positive_probability

    mlflow.set_tracking_uri(registered["uri"])
    try:
        expected = positive_probability(load_pyfunc(f"models:/{name}@champion"), frame)
    finally:
        mlflow.set_tracking_uri(None)
    served = [row["probability"] for row in answer["predictions"]]
    np.testing.assert_allclose(served, expected, rtol=1e-9, atol=1e-12)


def _download(registered, name: str, artifact: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    try:
        return mlflow.artifacts.download_artifacts(f"models:/{name}@champion/{artifact}",
                                                   dst_path=str(registered["folder"] / f"{name}-example"))
    finally:
        mlflow.set_tracking_uri(None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_ping(port: int, server: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited {server.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer /ping in {timeout:.0f}s:\n{log_path.read_text()[-4000:]}")
