"""Each candidate family's ``params``: names, types, defaults and ranges, checked when a spec loads.

A candidate in a spec names a ``family`` and gives it ``params`` (and a ``search`` space over the
same names). Each family has one typed schema here. The loader checks every candidate's params
and search space against it and names the field of each problem
(``candidates.2.params.epochs: unknown parameter of torch_mlp (did you mean 'max_epochs'?) …``),
so a typo fails before any data is read; the model families read their params through the same
schema (``LightGBMParamsSpec.of(params)``), so a name, type, default or range is written once,
here. ``python -m ml_tasks spec-reference`` prints them all.

>>> TorchMLPParamsSpec.of({"hidden": "64, 32", "bf16": False}).hidden
(64, 32)
>>> TorchMLPParamsSpec.of({"batch_size": 0, "epochs": 3})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: torch_mlp: param 'epochs': unknown parameter of torch_mlp (did you mean 'max_epochs'?); expected ...
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from ml_tasks.core.spec.base import Loc, nested, problem


class SearchRange(BaseModel):
    """A continuous (or integer) range of one hyper-parameter for the tuning search (Optuna TPE)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def ends(self) -> dict[str, float | int]:
        """The most extreme values a draw can give (an integer range rounds, as the search does)."""
        return {end: int(round(value)) if self.integer else value
                for end, value in (("low", self.low), ("high", self.high))}


class FamilyParams(BaseModel):
    """Base of the family schemas: strict types (a number written as one), no unknown names."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: The ``family`` a spec names for these params.
    family: ClassVar[str] = ""
    #: Other names a library uses for a parameter (theirs: ours), for the hint of an unknown name.
    aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def problems(cls, params: Mapping[str, object]) -> list[InitErrorDetails]:
        """Every problem of ``params`` at once, each at ``(name,)``."""
        found = [cls._unknown(name, value) for name, value in params.items() if name not in cls.model_fields]
        try:
            cls.model_validate({name: value for name, value in params.items() if name in cls.model_fields})
        except ValidationError as exc:
            found += nested(exc)
        return found

    @classmethod
    def search_problems(cls, search: Mapping[str, list[float | int | str | bool] | SearchRange]
                        ) -> list[InitErrorDetails]:
        """Every problem of a ``search`` space at once: unknown names, listed values the parameter
        cannot take, and ranges that do not suit it (each at ``(name, …)``)."""
        found = []
        for name, space in search.items():
            field = cls.model_fields.get(name)
            if field is None:
                found.append(cls._unknown(name, space))
            elif isinstance(space, list):
                if not space:
                    found.append(problem((name,), "expected at least one value to choose from", space))
                for index, value in enumerate(space):
                    found += cls._value_problems(name, value, (name, index))
            elif field.annotation not in (int, float):
                found.append(problem((name,), f"{name} is not a number: list its values instead of a range",
                                     space.model_dump()))
            elif field.annotation is int and not space.integer:
                found.append(problem((name, "integer"), f"{name} is a whole number: write integer: true",
                                     space.integer))
            else:
                for end, value in space.ends().items():
                    found += cls._value_problems(name, value, (name, end))
        return found

    @classmethod
    def of(cls, params: Mapping[str, object]) -> Self:
        """The typed params, or a ``ValueError`` naming the family and every bad parameter."""
        found = cls.problems(params)
        if found:
            errors = ValidationError.from_exception_data(cls.__name__, found).errors()
            raise ValueError(f"{cls.family}: " + "; ".join(
                f"param {'.'.join(map(str, e['loc']))!r}: {error_message(e['msg'])}"
                f"{got_suffix(e['type'], e['msg'], e['input'])}" for e in errors))
        return cls.model_validate(dict(params))

    @classmethod
    def _unknown(cls, name: str, value: object) -> InitErrorDetails:
        known = sorted(cls.model_fields)
        if not known:
            return problem((name,), f"unknown parameter: {cls.family} takes no parameters", value, "unknown_parameter")
        if name in cls.aliases:
            hint = f" (write {cls.aliases[name]}, the name Refit uses)"
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return problem((name,), f"unknown parameter of {cls.family}{hint}; expected one of {known}", value,
                       "unknown_parameter")

    @classmethod
    def _value_problems(cls, name: str, value: object, loc: Loc) -> list[InitErrorDetails]:
        try:
            cls.model_validate({name: value})
        except ValidationError as exc:
            return [problem((*loc, *error["loc"][1:]), error["msg"], error.get("input"), error["type"])
                    for error in exc.errors()]
        return []


def error_message(message: str) -> str:
    """A validator's message without pydantic's ``Value error, `` prefix."""
    return message.removeprefix("Value error, ")


def got_suffix(kind: str, message: str, value: object) -> str:
    """``, got <value>`` after a schema's message about a value written in a spec; nothing after
    Refit's own messages (they say what they need to), nor for a whole section."""
    shown = f"{value!r}"
    if kind in ("spec", "unknown_parameter") or f"got {shown}" in message or not isinstance(value, str | int | float):
        return ""
    return f", got {shown:.60}"


class PriorParamsSpec(FamilyParams):
    """Predicts the (weighted) training positive rate for every row: the floor any model must beat."""

    family: ClassVar[str] = "prior"


class LogisticRegressionParamsSpec(FamilyParams):
    """scikit-learn's ``LogisticRegression`` (L2 penalty, lbfgs) on median-imputed, standardised
    numerics and one-hot categoricals: the usual baseline."""

    family: ClassVar[str] = "logistic_regression"

    C: float = Field(1.0, gt=0.0, description="inverse strength of the L2 penalty (smaller: a simpler model)")
    max_iter: int = Field(2000, ge=1, description="most iterations of the solver")


class LightGBMParamsSpec(FamilyParams):
    """LightGBM gradient-boosted trees with native categoricals, early stopping on the validation
    rows and warm start from a LightGBM champion. Names are those of LightGBM's scikit-learn API.
    ``n_estimators``, ``early_stopping_rounds`` and ``num_threads`` are Refit's; any other
    parameter left unset is not passed, so LightGBM's own default (shown) applies."""

    family: ClassVar[str] = "lightgbm"
    aliases: ClassVar[dict[str, str]] = {
        "num_boost_round": "n_estimators", "num_iterations": "n_estimators", "eta": "learning_rate",
        "min_data_in_leaf": "min_child_samples", "min_sum_hessian_in_leaf": "min_child_weight",
        "bagging_fraction": "subsample", "bagging_freq": "subsample_freq", "feature_fraction": "colsample_bytree",
        "lambda_l1": "reg_alpha", "lambda_l2": "reg_lambda", "min_gain_to_split": "min_split_gain",
        "n_jobs": "num_threads",
    }

    n_estimators: int = Field(500, ge=1, description="most boosting rounds (trees); early stopping usually "
                                                     "ends sooner")
    early_stopping_rounds: int = Field(50, ge=1, description="stop after this many rounds without a better "
                                                             "validation loss (the best round is kept)")
    learning_rate: float = Field(0.1, gt=0.0, description="shrinkage of every tree")
    num_leaves: int = Field(31, ge=2, le=131072, description="most leaves per tree")
    max_depth: int = Field(-1, ge=-1, description="deepest a tree may grow (-1 or 0: no limit)")
    min_child_samples: int = Field(20, ge=0, description="fewest rows in a leaf")
    min_child_weight: float = Field(1e-3, ge=0.0, description="least total hessian in a leaf")
    subsample: float = Field(1.0, gt=0.0, le=1.0, description="share of rows each bagging round draws "
                                                              "(needs subsample_freq > 0)")
    subsample_freq: int = Field(0, ge=0, description="bag every this many rounds (0: no bagging)")
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0, description="share of features each tree may use")
    reg_alpha: float = Field(0.0, ge=0.0, description="L1 penalty on leaf values")
    reg_lambda: float = Field(0.0, ge=0.0, description="L2 penalty on leaf values")
    min_split_gain: float = Field(0.0, ge=0.0, description="least loss reduction a split must bring")
    num_threads: int = Field(0, ge=0, description="threads (0: the trainer's CPU budget, trainer.cpus or "
                                                  "REFIT_TRAINER_THREADS)")


def _layer_widths(value: object) -> object:
    """``"256,128"`` (or one width as a number) → ``(256, 128)``; ``""`` is no hidden layer."""
    if isinstance(value, tuple):
        return value
    expected = f"expected layer widths as whole numbers separated by commas, such as '256,128', got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(expected)
    parts = [value] if isinstance(value, int) else [part for part in value.replace(" ", "").split(",") if part]
    try:
        widths = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(expected) from None
    if any(width < 1 for width in widths):
        raise ValueError(f"layer widths must be >= 1, got {value!r}")
    return widths


def _auto_or_flag(value: object) -> object:
    if value != "auto" and not isinstance(value, bool):
        raise ValueError(f"expected true, false or auto, got {value!r}")
    return value


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return value


class TorchMLPParamsSpec(FamilyParams):
    """A PyTorch multi-layer perceptron over standardised numerics and categorical embeddings,
    trained with AdamW, early stopping, per-epoch checkpoints and a one-batch check."""

    family: ClassVar[str] = "torch_mlp"

    hidden: Annotated[tuple[int, ...], BeforeValidator(_layer_widths)] = Field(
        (256, 128), description="widths of the hidden layers (\"\": a linear model on the embeddings)",
        json_schema_extra={"written": "layer widths, e.g. \"256,128\"", "range": "each ≥ 1"})
    embedding_dim: int = Field(8, ge=1, description="width of every categorical embedding")
    dropout: float = Field(0.1, ge=0.0, le=0.95, description="dropout after every hidden layer")
    lr: float = Field(1e-3, ge=1e-12, le=10.0, description="AdamW learning rate (constant)")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW decoupled weight decay")
    batch_size: int = Field(1024, ge=1, description="rows per optimiser step (at most the training rows)")
    max_epochs: int = Field(50, ge=1, description="most passes over the training rows")
    patience: int = Field(5, ge=1, description="epochs without a better validation loss before training stops "
                                               "(the best epoch's weights are kept)")
    min_delta: float = Field(0.0, ge=0.0, description="how much lower the validation loss must be to count as "
                                                      "better")
    device: Annotated[str, AfterValidator(_device)] = Field(
        "auto", description="where to train (auto: CUDA when present, else the CPU)",
        json_schema_extra={"written": "auto, cpu, cuda, cuda:N or mps"})
    resident: Annotated[bool | Literal["auto"], BeforeValidator(_auto_or_flag)] = Field(
        "auto", description="keep the training rows on the device (auto: when they fit), or stream them")
    compile: bool = Field(False, description="torch.compile the network for training (slow to start; needs a C++ "
                                             "compiler on the CPU)")
    bf16: bool = Field(False, description="bfloat16 autocast in training (probabilities stay float32)")
    one_batch_check: bool = Field(True, description="overfit one batch before training, to catch a network "
                                                    "that cannot learn")


#: The schema of each family, by the name a spec gives in ``family``.
FAMILY_PARAMS: dict[str, type[FamilyParams]] = {
    schema.family: schema
    for schema in (PriorParamsSpec, LogisticRegressionParamsSpec, LightGBMParamsSpec, TorchMLPParamsSpec)
}


def candidate_problems(family: str, params: Mapping[str, object],
                       search: Mapping[str, list[float | int | str | bool] | SearchRange],
                       ) -> list[InitErrorDetails]:
    """Every problem of one candidate's ``params`` and ``search`` against its family's schema."""
    schema = FAMILY_PARAMS[family]
    return [*(_under("params", p) for p in schema.problems(params)),
            *(_under("search", p) for p in schema.search_problems(search))]


def _under(key: str, found: InitErrorDetails) -> InitErrorDetails:
    return {**found, "loc": (key, *found["loc"])}
