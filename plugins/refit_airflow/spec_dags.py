"""One DAG per model spec, built so that a broken spec removes only its own DAG.

Airflow records import errors per DAG *file*: if building one spec's DAG raised in
``dags/refit_retrain.py``, every model's retrain DAG would disappear with it. Both DAG files
therefore hand their builder to :func:`dags_per_spec`, which loads each spec in
``include/models/`` and builds and validates its DAG on its own (the checks the DagBag runs when
it collects a DAG). A spec that fails — malformed YAML, a field the schema rejects (a cron
Airflow cannot parse, a model name another file already uses), or a DAG Airflow would refuse —
becomes a placeholder DAG instead: ``<prefix><file stem>``, no schedule, tagged ``spec-error``,
its description and docs carrying the error that names the file and field, and one task,
``spec_error``, that fails with that message if anyone runs it. Every good spec's DAG is exactly
what its builder made. Fixing the file brings the real DAG back at the next parse.

A builder must create its DAG with ``auto_register=False``: Airflow otherwise collects a DAG as
soon as its ``with`` block exits, even one whose block raised half-way, and that half-built DAG
would sit next to (or in place of) the placeholder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from ml_tasks.core.settings import load_settings
from ml_tasks.core.spec import ModelSpec, SpecError, discover_specs, load_spec
from refit_airflow.notifiers import install as install_notifiers
from refit_airflow.scheduling import apply_timeouts
from refit_airflow.task_defaults import task_defaults

log = logging.getLogger(__name__)

#: Tag of the placeholder DAGs that stand in for specs that do not load.
SPEC_ERROR_TAG = "spec-error"

#: Builds one spec's DAG; None when the spec asks for no DAG of this kind (no ``scoring:`` section).
Builder = Callable[[Path, ModelSpec], DAG | None]


#: Every Refit DAG starts here; catch-up is off, so the date only bounds what a trigger may ask.
START_DATE = datetime(2024, 1, 1)


def spec_dag(spec: ModelSpec, kind: str, dag_id: str, doc: str | None, **settings: Any) -> DAG:
    """A DAG of one spec with what every Refit DAG shares: the start date, no catch-up, one active
    run at a time, the spec's task defaults (owner, retries, failure notification) and tags
    (``refit``, ``kind``, the spec's own), collected only once built whole (:func:`dags_per_spec`).
    ``settings`` are the rest of the DAG's arguments (description, schedule, params). Its tasks'
    notifications go through Airflow's notifiers where the settings ask (:mod:`refit_airflow.notifiers`)."""
    install_notifiers()
    return DAG(dag_id=dag_id, start_date=START_DATE, catchup=False, max_active_runs=1,
               tags=["refit", kind, *spec.tags], default_args=task_defaults(spec), doc_md=doc,
               auto_register=False, **settings)


def dags_per_spec(build: Builder, dag_id: Callable[[str], str], kind: str,
                  models_dir: Path | None = None, section: str | None = None) -> dict[str, DAG]:
    """``{dag_id: DAG}`` for every spec in ``models_dir`` (default: the settings' ``include/models``).

    ``build(spec_path, spec)`` makes one spec's DAG, or None when the spec wants none;
    ``dag_id(name)`` is the id rule of this DAG file (used for the placeholders, with the file stem
    as the name); ``kind`` (``retrain``, ``registry``, ``score``) tags them. A spec whose name an
    earlier file (sorted) already took is broken too. With ``section``, only a broken spec file
    that writes that top-level section gets a placeholder (the others would have had no DAG).
    """
    dags: dict[str, DAG] = {}
    names: dict[str, Path] = {}
    broken: list[tuple[Path, str]] = []
    for path in discover_specs(models_dir or load_settings().models_dir):
        try:
            spec = load_spec(path)
            if spec.name in names:
                raise SpecError(f"spec {path}: field 'name': {spec.name!r} is already the name of "
                                f"{names[spec.name]}; expected a name no other spec uses")
            dag = build(path, spec)
            if dag is not None:
                apply_timeouts(dag, spec)  # each task's execution_timeout: the spec's for its stage
                dag.validate()
        except Exception as exc:  # any spec may fail; none may take the others' DAGs with it
            if section is None or _writes_section(path, section):
                broken.append((path, _message(path, exc, kind)))
            continue
        names[spec.name] = path
        if dag is not None:
            dags[dag.dag_id] = dag
    for path, message in broken:  # after the good ones, so a placeholder never takes a real DAG's id
        placeholder = _spec_error_dag(_free_id(dag_id(_id_part(path.stem)), dags), path, kind, message)
        dags[placeholder.dag_id] = placeholder
    return dags


def _writes_section(path: Path, section: str) -> bool:
    """Whether the spec file's YAML has ``section`` at the top level (False when it does not parse)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # the file's retrain and registry placeholders already say why
    return isinstance(raw, dict) and section in raw


def _message(path: Path, exc: Exception, kind: str) -> str:
    if isinstance(exc, SpecError):  # already names the file and field
        return str(exc)
    return f"spec {path}: its {kind} DAG could not be built: {type(exc).__name__}: {exc}"


def _id_part(stem: str) -> str:
    """A file stem as DAG ids allow it (letters, digits, ``_``, ``.``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def _free_id(wanted: str, taken: dict[str, DAG]) -> str:
    while wanted in taken:  # another spec's DAG (or placeholder) has it: stay visible under another id
        wanted += "_spec_error"
    return wanted


def _spec_error_dag(dag_id: str, path: Path, kind: str, message: str) -> DAG:
    """A DAG that only shows, and fails with, why ``path`` has no real ``kind`` DAG."""
    log.error("%s DAG %s is a placeholder: %s", kind, dag_id, message)  # in the DAG processor's log
    with DAG(
        dag_id=dag_id,
        description=f"Broken spec {path.name}: {message}"[:500],
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        tags=["refit", kind, SPEC_ERROR_TAG],
        doc_md=(f"**The model spec `{path.name}` does not load, so this {kind} DAG is a placeholder "
                f"that runs nothing.**\n\n```\n{message}\n```\n\nFix `{path}`; the real DAG replaces this one "
                "at the next parse. Other models' DAGs are not affected."),
        auto_register=False,
    ) as dag:

        @task(task_id="spec_error", retries=0)
        def spec_error() -> None:
            raise AirflowFailException(message)

        spec_error()
    return dag
