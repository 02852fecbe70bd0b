"""The model spec: one YAML file says everything about one model.

A spec is loaded into :class:`ModelSpec`, a pydantic model that rejects unknown fields and
wrong values, every problem at once, each naming its field, so a typo in a spec fails before any
task runs. Each candidate family's ``params`` have a typed schema too (:mod:`.families`);
:func:`spec_reference` prints them all as Markdown.
A new model needs a new spec file in ``include/models/``, never new code.

Example
-------
>>> spec = load_spec("include/models/credit_default.yaml")      # doctest: +SKIP
>>> spec.columns.label, spec.features.numeric[:2]                # doctest: +SKIP
('defaulted', ['age', 'income'])
"""

from ml_tasks.core.spec.acceptance import (
    AcceptanceSpec,
    ComparisonSpec,
    ConsistencySpec,
    GuardrailSpec,
    SliceSpec,
    ThresholdSpec,
    min_folds_for,
)
from ml_tasks.core.spec.base import FAMILIES, NAME_PATTERN, SAMPLE_SIZES, SpecError
from ml_tasks.core.spec.data import (
    ColumnsSpec,
    FeaturesSpec,
    LeakageSpec,
    RatioBounds,
    SamplingSpec,
    SourceSpec,
    SplitSpec,
    StreamSpec,
    ValidationSpec,
)
from ml_tasks.core.spec.families import (
    FAMILY_PARAMS,
    FamilyParams,
    LightGBMParamsSpec,
    LogisticRegressionParamsSpec,
    PriorParamsSpec,
    SearchRange,
    TorchMLPParamsSpec,
)
from ml_tasks.core.spec.loading import (
    ADDED_FIELDS,
    NOT_RECIPE,
    discover_specs,
    load_spec,
    monitoring_section,
    query_path,
    query_texts,
    scoring_query,
    scoring_section,
    spec_hash,
)
from ml_tasks.core.spec.model import ModelSpec
from ml_tasks.core.spec.monitoring import (
    DECAY_METRICS,
    AgeTrigger,
    DecayTrigger,
    DriftTrigger,
    MonitoringSpec,
    TriggersSpec,
    VolumeTrigger,
)
from ml_tasks.core.spec.operations import (
    DEFAULT_TIMEOUT_MINUTES,
    PROMOTION_MODES,
    approval_needed,
    timeout_minutes,
)
from ml_tasks.core.spec.reference import spec_reference
from ml_tasks.core.spec.scoring import SHADOW_SUFFIX, ScoringSpec
from ml_tasks.core.spec.training import (
    BacktestSpec,
    CalibrationSpec,
    CandidateSpec,
    TrainerSpec,
    TrainingSpec,
)

__all__ = [
    "ADDED_FIELDS", "DECAY_METRICS", "DEFAULT_TIMEOUT_MINUTES", "PROMOTION_MODES", "approval_needed",
    "timeout_minutes", "FAMILIES", "FAMILY_PARAMS", "NAME_PATTERN", "NOT_RECIPE", "SAMPLE_SIZES",
    "SHADOW_SUFFIX", "AcceptanceSpec", "AgeTrigger", "BacktestSpec", "CalibrationSpec", "CandidateSpec", "ColumnsSpec",
    "ComparisonSpec", "ConsistencySpec", "DecayTrigger", "DriftTrigger", "FamilyParams", "FeaturesSpec",
    "GuardrailSpec", "LeakageSpec", "LightGBMParamsSpec", "LogisticRegressionParamsSpec", "ModelSpec",
    "MonitoringSpec", "PriorParamsSpec", "RatioBounds", "SamplingSpec", "ScoringSpec", "SearchRange", "SliceSpec",
    "SourceSpec", "SpecError", "SplitSpec", "StreamSpec", "ThresholdSpec", "TorchMLPParamsSpec", "TrainerSpec",
    "TrainingSpec", "TriggersSpec", "ValidationSpec", "VolumeTrigger", "discover_specs", "load_spec",
    "min_folds_for", "monitoring_section", "query_path", "query_texts", "scoring_query", "scoring_section",
    "spec_hash", "spec_reference",
]
