"""Give a warehouse result the Arrow types the model spec asks for, or name what does not fit.

Drivers disagree on types: SQLite hands back timestamps as text and any value in any column,
PostgreSQL's engines return their own types (ADBC wraps some in extension types). A snapshot's
schema therefore comes from the spec, not from the driver: :class:`Conformer` casts every batch
an engine yields, and :class:`ExtractTypeError` names the column, the expected type and example
values when a value cannot be converted.

Columns named in ``column_types`` come out with exactly these Arrow types:

============  ==========================================================================
``timestamp`` ``timestamp[us]``, naive, UTC implied. A ``timestamptz`` is converted to UTC,
              then its zone is dropped. Text (SQLite stores datetimes as text) is parsed
              as ISO 8601. Values outside years 1-9999, such as PostgreSQL ``infinity``,
              are rejected.
``float64``   ``double``. Integers, decimals and numeric text are converted.
``int64``     ``int64``. A null, a fractional value or an out-of-range value is rejected:
              ids and labels must be whole numbers.
``string``    ``large_string``, the type pandas 3's ``str`` dtype uses when it converts to
              Arrow, so snapshots keep the schema that ``extract.coerce_types`` gave them.
============  ==========================================================================

Every conversion is one vectorised :mod:`pyarrow.compute` cast per column and batch. Other
columns keep the engine's type, with ADBC's extension types and field metadata reduced to
plain storage types. The ``adbc`` and ``copy_csv`` engines agree on these types for the
common PostgreSQL types. A value that cannot be converted raises :class:`ExtractTypeError`,
naming the column, the expected type and example values. Nulls pass through unchanged, except
in ``int64`` columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ColumnTypes", "Conformer", "ExtractTypeError", "TargetType", "checked_target_types"]

TargetType = Literal["timestamp", "float64", "int64", "string"]
ColumnTypes = Mapping[str, TargetType]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.timestamp("us"),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "string": pa.large_string(),
}

# datetime's range. pandas, Python and most Parquet readers cannot represent timestamps outside it.
_MIN_TIMESTAMP_US = -62_135_596_800_000_000  # 0001-01-01
_MAX_TIMESTAMP_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999


class ExtractTypeError(ValueError):
    """A column's values cannot take the type the model spec asks for.

    The message names the column, the expected type, what the warehouse returned and a few
    offending values, for example::

        column 'income': expected float64 (the warehouse returned string),
        got values like 'n/a', 'unknown'

    The same facts are available as the ``column``, ``expected`` and ``examples`` attributes.
    """

    def __init__(self, column: str, expected: str, examples: Sequence[object] = (), *,
                 found: str | None = None, reason: str | None = None) -> None:
        self.column = column
        self.expected = expected
        self.examples = list(examples)
        self.found = found
        self.reason = reason
        message = f"column {column!r}: expected {expected}"
        if found:
            message += f" (the warehouse returned {found})"
        if self.examples:
            message += ", got values like " + ", ".join(repr(v) for v in self.examples)
        if reason:
            message += f": {reason}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Callable[..., ExtractTypeError], tuple[Any, ...]]:
        # Keep the attributes when the error crosses a process boundary.
        return (_rebuild_type_error, (self.column, self.expected, self.examples, self.found, self.reason))


def _rebuild_type_error(column: str, expected: str, examples: Sequence[object], found: str | None,
                        reason: str | None) -> ExtractTypeError:
    return ExtractTypeError(column, expected, examples, found=found, reason=reason)


def checked_target_types(column_types: ColumnTypes) -> dict[str, str]:
    """``column_types`` as a dict, once every type name is one :class:`Conformer` knows."""
    allowed = get_args(TargetType)
    for name, kind in column_types.items():
        if kind not in allowed:
            raise ValueError(f"column_types[{name!r}]: expected one of {list(allowed)}, got {kind!r}")
    return dict(column_types)


class Conformer:
    """Casts each batch to the requested types and keeps one schema across all batches."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        self._targets = targets
        self._schema: pa.Schema | None = None

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        if self._schema is None:
            for name in self._targets:
                if name not in names:
                    raise ExtractTypeError(name, self._targets[name],
                                           reason=f"no such column in the query result (columns: {', '.join(names)})")
        arrays = []
        for index, (name, array) in enumerate(zip(names, batch.columns, strict=True)):
            array = _storage(array)
            if name in self._targets:
                array = _convert(name, array, self._targets[name])
            elif self._schema is not None:
                array = _unify(name, array, self._schema.field(index).type)
            arrays.append(array)
        out = pa.RecordBatch.from_arrays(arrays, names=names)  # drops field metadata too
        if self._schema is None:
            self._schema = out.schema
        return out


def _storage(array: pa.Array) -> pa.Array:
    # ADBC wraps numeric, json and uuid in extension types. Their storage (text, or bytes for
    # uuid) is what the other engines return and what Parquet writes.
    return array.storage if isinstance(array.type, pa.BaseExtensionType) else array


def _unify(name: str, array: pa.Array, expected: pa.DataType) -> pa.Array:
    """Give a later batch's untyped column the type the first batch had (sqlalchemy infers per batch)."""
    if array.type == expected:
        return array
    if pa.types.is_null(expected):
        raise ExtractTypeError(name, "one type across batches", found=str(array.type),
                               reason="the first batch held only nulls, so the column's type was unknown; "
                                      "name the column in column_types")
    try:
        return array.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ExtractTypeError(name, str(expected), found=str(array.type),
                               reason=f"a later batch does not fit the first batch's type ({exc}); "
                                      "name the column in column_types") from None


def _convert(name: str, array: pa.Array, kind: str) -> pa.Array:
    target = _ARROW_TYPES[kind]
    source = array.type
    if kind == "int64" and array.null_count:
        raise ExtractTypeError(name, "int64", found=str(source),
                               reason=f"{array.null_count} null value(s); ids, labels and entities must not be null")
    if kind == "timestamp":
        return _to_timestamp(name, array)  # even when already timestamp[us]: range check
    if source == target:
        return array
    if pa.types.is_null(source):
        return array.cast(target)
    if kind == "string":
        return _cast_or_raise(name, array, kind, pc.CastOptions(target))
    if _is_text(source) or pa.types.is_integer(source) or pa.types.is_floating(source) \
            or pa.types.is_decimal(source) or pa.types.is_boolean(source):
        # float64 may round (a decimal, an int beyond 2**53): that is what a float column means.
        # int64 must not: safe casts reject fractions and overflow.
        return _cast_or_raise(name, array, kind, pc.CastOptions(target, allow_float_truncate=False)
                              if kind == "int64" else pc.CastOptions.unsafe(target))
    raise ExtractTypeError(name, kind, _examples(array), found=str(source),
                           reason=f"{source} cannot be converted to {kind}")


def _is_text(data_type: pa.DataType) -> bool:
    return (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or pa.types.is_string_view(data_type))


def _to_timestamp(name: str, array: pa.Array) -> pa.Array:
    source = array.type
    target = _ARROW_TYPES["timestamp"]
    if source == target:
        converted = array
    elif pa.types.is_null(source):
        return array.cast(target)
    elif pa.types.is_timestamp(source):
        # Arrow keeps timestamps as UTC instants, so dropping the zone leaves UTC wall time.
        # PostgreSQL has microseconds; a finer unit from elsewhere is truncated to them.
        converted = pc.cast(array, options=pc.CastOptions(target, allow_time_truncate=True))
    elif pa.types.is_date(source):
        converted = array.cast(target)
    elif _is_text(source):
        converted = _parse_timestamps(name, array)
    else:
        raise ExtractTypeError(name, "timestamp", _examples(array), found=str(source),
                               reason=f"{source} is not a timestamp; epoch numbers are ambiguous, convert them in SQL")
    _check_timestamp_range(name, converted, source)
    return converted


def _check_timestamp_range(name: str, converted: pa.Array, source: pa.DataType) -> None:
    micros = converted.cast(pa.int64())
    low, high = pc.min_max(micros).values()
    if low.is_valid and (low.as_py() < _MIN_TIMESTAMP_US or high.as_py() > _MAX_TIMESTAMP_US):
        bad = pc.or_(pc.less(micros, _MIN_TIMESTAMP_US), pc.greater(micros, _MAX_TIMESTAMP_US))
        raise ExtractTypeError(name, "timestamp", micros.filter(bad).slice(0, 3).to_pylist(), found=str(source),
                               reason="microseconds since 1970 outside years 1-9999 (PostgreSQL 'infinity'?)")


def _parse_timestamps(name: str, array: pa.Array) -> pa.Array:
    # ISO 8601 text without an offset is naive UTC (what SQLite stores). Text with offsets is
    # parsed as instants and converted to UTC.
    try:
        return array.cast(_ARROW_TYPES["timestamp"])
    except pa.ArrowInvalid:
        pass
    try:
        return array.cast(pa.timestamp("us", tz="UTC")).cast(_ARROW_TYPES["timestamp"])
    except pa.ArrowInvalid:
        pass
    return _cast_or_raise(name, array, "timestamp", pc.CastOptions(_ARROW_TYPES["timestamp"]))


def _cast_or_raise(name: str, array: pa.Array, kind: str, options: pc.CastOptions) -> pa.Array:
    try:
        return pc.cast(array, options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        def fails(part: pa.Array) -> bool:
            try:
                pc.cast(part, options=options)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return True
            return False

        raise ExtractTypeError(name, kind, _failing_values(array, fails), found=str(array.type),
                               reason=str(exc).split("\n")[0]) from None


def _failing_values(array: pa.Array, fails: Callable[[pa.Array], bool], limit: int = 3) -> list[Any]:
    """Up to ``limit`` values that make ``fails`` true, found by bisection.

    A handful of casts over shrinking slices find each value, so the error path never loops
    over the rows in Python.
    """
    found: list[Any] = []
    rest = array
    while len(found) < limit and len(rest) and fails(rest):
        low, high = 0, len(rest)  # invariant: rest[low:high] holds a failing value
        while high - low > 1:
            middle = (low + high) // 2
            if fails(rest.slice(low, middle - low)):
                high = middle
            else:
                low = middle
        found.append(rest[low].as_py())
        rest = rest.slice(low + 1)
    return found


def _examples(array: pa.Array, limit: int = 3) -> list[Any]:
    return array.drop_null().slice(0, limit).to_pylist()
