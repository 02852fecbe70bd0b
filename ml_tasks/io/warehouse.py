"""Stream a parameterised query's result out of a SQL warehouse as typed Arrow record batches.

:func:`stream_query` is the one entry point. It takes a SQLAlchemy-style query (``:name``
placeholders, as in ``include/sql/*.sql``), the parameter values and the Arrow types the model
spec wants for some columns, and yields :class:`pyarrow.RecordBatch` objects of at most
``batch_rows`` rows. Memory stays bounded by a few batches whatever the size of the result, so
a result of any size can go to Parquet::

    batches = stream_query(url, sql, {"window_start": start, "as_of": as_of},
                           {"applied_at": "timestamp", "income": "float64", "region": "string"})
    first = next(batches)
    with pyarrow.parquet.ParquetWriter("snapshot.parquet", first.schema) as writer:
        writer.write_batch(first)
        for batch in batches:
            writer.write_batch(batch)

Engines
-------
``engine="auto"`` picks the first name :func:`available_engines` returns for the URL's dialect.
Another name chooses an engine explicitly, for tests and ``bench/bench_extract.py``.

``adbc`` (PostgreSQL, what ``auto`` picks there)
    The ADBC libpq driver runs ``COPY (query) TO STDOUT (FORMAT binary)`` and decodes the
    binary rows into Arrow in C++. It reads only when asked for the next batch, and cuts
    batches by a byte-size hint, so memory is bounded. PostgreSQL writes binary COPY faster
    than CSV, and the server's CPU time to produce the stream sets the speed limit on
    localhost. So this is the fastest bounded path: about as fast as raw binary COPY and as
    ConnectorX, and faster than ``copy_csv``. Numbers are in ``bench/bench_extract.py``'s
    output.
``copy_csv`` (PostgreSQL, used by ``auto`` when the ADBC driver is not installed)
    psycopg 3 ``COPY (query) TO STDOUT (FORMAT csv)``. Whole rows are gathered into blocks of
    up to ``batch_rows`` rows, and each block is parsed by :func:`pyarrow.csv.read_csv` with
    explicit column types taken from the query's result description. Needs only psycopg and
    pyarrow.
``sqlalchemy`` (every dialect; the only engine for SQLite and the others)
    ``text()`` with driver-bound parameters, ``stream_results=True`` and ``yield_per``, each
    chunk turned into Arrow column by column with :func:`pyarrow.array`. Several times
    slower, because every value passes through a Python object, but it works on every
    database SQLAlchemy can reach.

ConnectorX is not an engine. Its ``return_type="arrow"`` loads the whole result into memory.
Its ``"arrow_stream"`` mode reads ahead on a background thread with no limit: with a consumer
slower than the warehouse, peak memory grows with the result (measured 744 MB of 5M rows with
a consumer taking 1 s per batch). ADBC reads only when asked for the next batch.

Parameters and COPY
-------------------
``COPY`` is a utility statement. PostgreSQL cannot bind ``$1`` parameters inside it, and ADBC
given bound parameters runs a prepared statement whose whole result libpq holds in memory. So
both PostgreSQL COPY engines inline the values as SQL literals. psycopg's
:meth:`psycopg.ClientCursor.mogrify` writes them on a live connection to the same server: its
quoting knows the connection's encoding and ``standard_conforming_strings``, strings are
escaped as PostgreSQL requires, and datetimes get an explicit ``::timestamp`` cast. psycopg's
own server-side cursors bind values the same way. Our code never formats a value into SQL
text. A value such as ``"x' OR '1'='1"`` stays one string literal. ``COPY`` also accepts one
statement only, so a ``;`` in the query cannot start a second one.

Types
-----
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

import functools
import queue
import re
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ColumnTypes", "ENGINES", "ExtractTypeError", "TargetType", "available_engines", "stream_query"]

TargetType = Literal["timestamp", "float64", "int64", "string"]
ColumnTypes = Mapping[str, TargetType]

#: Every engine name :func:`stream_query` knows, in order of preference on PostgreSQL.
ENGINES: tuple[str, ...] = ("adbc", "copy_csv", "sqlalchemy")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.timestamp("us"),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "string": pa.large_string(),
}

# Batches a background thread may hold ready while the consumer works. Two overlap the
# warehouse read with the consumer's work (a Parquet write, say) and cap memory at a few batches.
_PREFETCH_BATCHES = 2
# Both COPY engines cut batches by bytes, not rows. About 128 bytes a row aims their batches
# near batch_rows for typical tables. Batches with more rows are sliced, so the cap holds for
# wide rows too.
_BYTES_PER_ROW_HINT = 128
_MIN_BLOCK_BYTES = 1 << 20
_MAX_BLOCK_BYTES = 64 << 20

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

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return (_rebuild_type_error, (self.column, self.expected, self.examples, self.found, self.reason))


def _rebuild_type_error(column, expected, examples, found, reason) -> ExtractTypeError:
    return ExtractTypeError(column, expected, examples, found=found, reason=reason)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def available_engines(url: str) -> list[str]:
    """Names of the engines that can read from ``url``, fastest first.

    ``engine="auto"`` uses the first one. On PostgreSQL this is ``["adbc", "copy_csv",
    "sqlalchemy"]``, without ``adbc`` when ``adbc_driver_postgresql`` is not installed. On every
    other dialect it is ``["sqlalchemy"]``.

    >>> available_engines("sqlite:///warehouse.db")
    ['sqlalchemy']
    """
    if _backend(url) != "postgresql":
        return ["sqlalchemy"]
    engines = ["copy_csv", "sqlalchemy"]
    if _adbc_installed():
        engines.insert(0, "adbc")
    return engines


def stream_query(
    url: str,
    sql: str,
    params: Mapping[str, datetime | int | float | str],
    column_types: ColumnTypes,
    *,
    batch_rows: int = 131_072,
    engine: str = "auto",
) -> Iterator[pa.RecordBatch]:
    """Yield the query's rows as record batches of at most ``batch_rows`` rows.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the warehouse, e.g. ``sqlite:///warehouse.db`` or
        ``postgresql+psycopg://user@host:5432/db``. The PostgreSQL COPY engines connect with
        psycopg 3 or libpq, whatever driver the URL names.
    sql : str
        One SELECT with SQLAlchemy-style ``:name`` placeholders. The values are always bound
        by the driver, or quoted by it for COPY (see the module docstring). Our code never
        formats them into the text. Write ``\\:`` for a literal colon, as with ``text()``.
    params : mapping
        A value for every placeholder; extra keys are ignored. Timezone-aware datetimes are
        converted to naive UTC, the warehouse's convention. Naive datetimes are bound as
        ``DateTime``, so SQLite compares them in the text format it stores.
    column_types : mapping of column name to ``"timestamp"``, ``"float64"``, ``"int64"`` or ``"string"``
        The Arrow type these columns must have (see "Types" in the module docstring). Other
        columns keep the engine's type. Every column named must exist in the result.
    batch_rows : int, default 131_072
        Upper bound on rows per batch. Engines may yield smaller batches.
    engine : str, default "auto"
        ``"auto"`` or one of :func:`available_engines`.

    Yields
    ------
    pyarrow.RecordBatch
        All batches have the same schema. At least one batch comes out, with zero rows for an
        empty result, so the schema is always known.

    Raises
    ------
    ValueError
        At call time: an unknown or unavailable engine, a missing parameter, an unknown type
        name in ``column_types``, or ``batch_rows < 1``.
    ExtractTypeError
        While iterating: a column named in ``column_types`` is missing or holds a value that
        cannot be converted.

    Errors from the database driver (a syntax error, a missing table) are raised while
    iterating too, unchanged.

    Notes
    -----
    A background thread reads up to two batches ahead while the caller works on the current
    one. Stopping early, by ``break`` or ``close()``, stops that thread and closes the
    connection, which aborts the query on the server.
    """
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    targets = _target_types(column_types)
    chosen = _choose_engine(url, engine)
    names = _placeholders(sql)
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"query parameter(s) {', '.join(repr(m) for m in missing)} have no value; "
                         f"the query uses {', '.join(repr(n) for n in names)}, got {sorted(params)}")
    bound = {name: _naive_utc(params[name]) for name in names}

    def produce() -> Iterator[pa.RecordBatch]:
        conform = _Conformer(targets)
        with closing(_READERS[chosen](url, sql, bound, batch_rows)) as batches:
            for batch in batches:
                yield conform(batch)

    return _prefetched(lambda: _at_most(produce(), batch_rows), _PREFETCH_BATCHES)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def _backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


@functools.cache
def _adbc_installed() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _choose_engine(url: str, engine: str) -> str:
    engines = available_engines(url)
    if engine == "auto":
        return engines[0]
    if engine not in engines:
        raise ValueError(f"engine {engine!r} cannot read from a {_backend(url)} warehouse; "
                         f"expected 'auto' or one of {engines}")
    return engine


def _target_types(column_types: ColumnTypes) -> dict[str, str]:
    allowed = get_args(TargetType)
    for name, kind in column_types.items():
        if kind not in allowed:
            raise ValueError(f"column_types[{name!r}]: expected one of {list(allowed)}, got {kind!r}")
    return dict(column_types)


def _placeholders(sql: str) -> list[str]:
    """Bind parameter names in ``sql``, parsed by SQLAlchemy's own ``text()`` rules.

    Parsing them with SQLAlchemy gives ``::`` casts and ``\\:`` escapes the same meaning here
    as in the rest of the pipeline. As with ``text()``, a ``:name`` inside a string literal or
    a comment counts as a placeholder too.
    """
    from sqlalchemy import text

    return list(text(sql).compile().params)


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


# ---------------------------------------------------------------------------------------------
# PostgreSQL: connections and literal binding
# ---------------------------------------------------------------------------------------------


def _libpq_params(url: str) -> dict[str, str]:
    """libpq connection parameters for a SQLAlchemy PostgreSQL URL, whatever its driver."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    params: dict[str, str] = {}
    for key, value in (("host", parsed.host), ("port", parsed.port), ("user", parsed.username),
                       ("password", parsed.password), ("dbname", parsed.database)):
        if value is not None:
            params[key] = str(value)
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    # Text reaches Arrow as UTF-8 whatever the database's encoding. The literal quoting
    # follows this encoding too.
    params["client_encoding"] = "UTF8"
    return params


def _psycopg_connect(url: str):
    import psycopg

    # autocommit: a lone statement needs no transaction, and closing leaves none behind.
    return psycopg.connect(**_libpq_params(url), autocommit=True)


def _adbc_uri(url: str) -> str:
    from urllib.parse import quote, urlencode

    params = _libpq_params(url)
    netloc = ""
    if "user" in params:
        netloc = quote(params.pop("user"), safe="")
        if "password" in params:
            netloc += ":" + quote(params.pop("password"), safe="")
        netloc += "@"
    host = params.pop("host", "")
    netloc += f"[{host}]" if ":" in host else quote(host, safe="")
    if "port" in params:
        netloc += ":" + params.pop("port")
    dbname = quote(params.pop("dbname", ""), safe="")
    return f"postgresql://{netloc}/{dbname}" + (f"?{urlencode(params)}" if params else "")


def _with_literals(conn, sql: str, params: Mapping[str, Any]) -> str:
    """``sql`` with its ``:name`` placeholders replaced by literals quoted by psycopg.

    Needed for the COPY engines (see the module docstring): SQLAlchemy turns the placeholders
    into psycopg's ``%(name)s`` form, and psycopg's :class:`~psycopg.ClientCursor` quotes each
    value for this connection.
    """
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    compiled = text(sql).compile(dialect=PGDialect_psycopg())
    values = compiled.construct_params(dict(params), escape_names=True)
    return psycopg.ClientCursor(conn).mogrify(str(compiled), values)


def _copy_target(sql: str) -> str:
    # COPY takes a bare SELECT. A trailing ';' would be a syntax error. The newline before ')'
    # keeps a trailing '-- comment' from swallowing the parenthesis.
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    return f"(\n{body}\n)"


def _block_bytes(batch_rows: int) -> int:
    return max(_MIN_BLOCK_BYTES, min(_MAX_BLOCK_BYTES, batch_rows * _BYTES_PER_ROW_HINT))


# ---------------------------------------------------------------------------------------------
# Engines: each yields raw record batches (any size, engine types); stream_query does the rest
# ---------------------------------------------------------------------------------------------


def _adbc_batches(url: str, sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc

    # Quoting needs a connection that knows the server's settings. ADBC cannot quote, so psycopg
    # does it on a short-lived connection to the same server.
    with _psycopg_connect(url) as conn:
        query = _with_literals(conn, sql, params)
    with adbc.connect(_adbc_uri(url), autocommit=True) as conn, conn.cursor() as cursor:
        # With no bound parameters, the driver runs COPY (query) TO STDOUT (FORMAT binary) and
        # cuts batches of about this many bytes.
        cursor.adbc_statement.set_options(
            **{"adbc.postgresql.batch_size_hint_bytes": str(_block_bytes(batch_rows))})
        cursor.execute(query)
        reader = cursor.fetch_record_batch()
        produced = False
        for batch in reader:
            produced = True
            yield batch
        if not produced:
            yield _empty_batch(reader.schema)


# Arrow type for each PostgreSQL type OID the CSV engine parses natively: the same types ADBC
# returns, so the two engines agree on columns the spec does not type. Any other type
# arrives as its text form.
_CSV_TYPES_BY_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),  # oid is unsigned 32-bit
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}

# Output formats the CSV parser reads: ISO dates, UTC offsets, and floats printed in their
# shortest exact form (extra_float_digits > 0; 3 also makes servers older than 12 exact).
_CSV_SESSION = (
    "SET DateStyle TO 'ISO, MDY'",
    "SET TimeZone TO 'UTC'",
    "SET extra_float_digits TO 3",
)


def _copy_csv_batches(url: str, sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    with _psycopg_connect(url) as conn:
        for statement in _CSV_SESSION:
            conn.execute(statement)
        query = _with_literals(conn, sql, params)
        cursor = conn.cursor()
        # The result's names and type OIDs fix each CSV column's Arrow type before any row is
        # parsed. With LIMIT 0 the server plans the query but fetches no rows.
        cursor.execute(f"SELECT * FROM {_copy_target(query)} AS refit_describe LIMIT 0")
        names = [column.name for column in cursor.description]
        oids = [column.type_code for column in cursor.description]
        # Positional keys: result column names may repeat, CSV column names may not.
        keys = [f"c{i}" for i in range(len(names))]
        types = {k: _CSV_TYPES_BY_OID.get(oid, pa.string()) for k, oid in zip(keys, oids)}
        read_options = pacsv.ReadOptions(column_names=keys)
        parse_options = pacsv.ParseOptions(newlines_in_values=True)
        convert_options = pacsv.ConvertOptions(
            column_types=types,
            # COPY CSV writes NULL as an empty unquoted field and '' as "": these settings keep
            # the two apart.
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"],
        )
        max_bytes = _MAX_BLOCK_BYTES  # rows decide, unless rows are very wide
        produced = False
        with cursor.copy(f"COPY {_copy_target(query)} TO STDOUT WITH (FORMAT csv)") as copy:
            # PostgreSQL sends COPY TO data one row per message, so a block cut between
            # messages holds whole rows. Each block is parsed on its own, on this thread.
            # pyarrow's streaming reader would pull from the COPY on its own IO thread and
            # read several blocks ahead. That thread would race psycopg's cleanup when the
            # consumer stops early, and the blocks it reads ahead cost memory.
            while True:
                block = bytearray()
                rows = 0
                while rows < batch_rows and len(block) < max_bytes:
                    data = copy.read()
                    if not data:
                        break
                    block += data
                    rows += 1
                if not rows:
                    break
                try:
                    table = pacsv.read_csv(pa.py_buffer(block), read_options=read_options,
                                           parse_options=parse_options, convert_options=convert_options)
                except pa.ArrowInvalid as exc:
                    raise _csv_error(exc, names, list(types.values())) from None
                for batch in table.to_batches():
                    produced = True
                    yield pa.RecordBatch.from_arrays(batch.columns, names=names)
        if not produced:
            yield _empty_batch(pa.schema([(n, types[k]) for n, k in zip(names, keys)]))


def _csv_error(exc: pa.ArrowInvalid, names: list[str], types: list[pa.DataType]) -> Exception:
    # e.g. "In CSV column #3: Row #120: CSV conversion error to timestamp[us]: invalid value 'infinity'"
    column = re.search(r"CSV column #(\d+)", str(exc))
    if column is None or int(column.group(1)) >= len(names):
        return exc
    index = int(column.group(1))
    value = re.search(r"invalid value '(.*)'", str(exc))
    return ExtractTypeError(names[index], str(types[index]), [value.group(1)] if value else [],
                            reason=f"the CSV engine cannot parse PostgreSQL's text form ({exc})")


def _sqlalchemy_batches(url: str, sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
    from sqlalchemy import DateTime, bindparam, create_engine, text

    # DateTime tells SQLAlchemy to send datetimes in the dialect's storage format, which for
    # SQLite is the text it compares against.
    statement = text(sql).bindparams(
        *(bindparam(name, type_=DateTime()) for name, value in params.items() if isinstance(value, datetime)))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # stream_results: a server-side cursor where the driver has one, so the driver never
            # holds the whole result.
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(statement, params)
            names = list(result.keys())
            produced = False
            for rows in result.partitions(batch_rows):
                produced = True
                yield pa.RecordBatch.from_arrays(
                    [_python_column(values) for values in zip(*rows)], names=names)
            if not produced:
                yield pa.RecordBatch.from_arrays([pa.array([], pa.null()) for _ in names], names=names)
    finally:
        engine.dispose()


def _python_column(values: Sequence[Any]) -> pa.Array:
    """Arrow array from one column of driver values; the type is inferred by pyarrow in C."""
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed kinds in one column (SQLite stores any value in any column) or a type pyarrow
        # does not know: take each value's text. The column's target type then parses it or
        # names the values that cannot be parsed.
        return pa.array([None if v is None else str(v) for v in values], pa.large_string())


_READERS: dict[str, Callable[[str, str, Mapping[str, Any], int], Iterator[pa.RecordBatch]]] = {
    "adbc": _adbc_batches,
    "copy_csv": _copy_csv_batches,
    "sqlalchemy": _sqlalchemy_batches,
}


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------


class _Conformer:
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
        for index, (name, array) in enumerate(zip(names, batch.columns)):
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
        converted = _to_timestamp(name, array)  # even when already timestamp[us]: range check
    elif source == target:
        converted = array
    elif pa.types.is_null(source):
        converted = array.cast(target)
    elif kind == "string":
        converted = _cast_or_raise(name, array, kind, pc.CastOptions(target))
    elif _is_text(source) or pa.types.is_integer(source) or pa.types.is_floating(source) \
            or pa.types.is_decimal(source) or pa.types.is_boolean(source):
        # float64 may round (a decimal, an int beyond 2**53): that is what a float column means.
        # int64 must not: safe casts reject fractions and overflow.
        converted = _cast_or_raise(name, array, kind, pc.CastOptions(target, allow_float_truncate=False)
                                   if kind == "int64" else pc.CastOptions.unsafe(target))
    else:
        raise ExtractTypeError(name, kind, _examples(array), found=str(source),
                               reason=f"{source} cannot be converted to {kind}")
    return converted


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
    micros = converted.cast(pa.int64())
    low, high = pc.min_max(micros).values()
    if low.is_valid and (low.as_py() < _MIN_TIMESTAMP_US or high.as_py() > _MAX_TIMESTAMP_US):
        bad = pc.or_(pc.less(micros, _MIN_TIMESTAMP_US), pc.greater(micros, _MAX_TIMESTAMP_US))
        raise ExtractTypeError(name, "timestamp", micros.filter(bad).slice(0, 3).to_pylist(), found=str(source),
                               reason="microseconds since 1970 outside years 1-9999 (PostgreSQL 'infinity'?)")
    return converted


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


# ---------------------------------------------------------------------------------------------
# Batching and read-ahead
# ---------------------------------------------------------------------------------------------


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _at_most(batches: Generator[pa.RecordBatch, None, None], batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
    """Slices (zero-copy) batches longer than ``batch_rows``. It drops empty batches but keeps
    one if the result has no rows."""
    empty = None
    produced = False
    with closing(batches):
        for batch in batches:
            if batch.num_rows == 0:
                if empty is None:
                    empty = batch
                continue
            for start in range(0, batch.num_rows, batch_rows):
                produced = True
                yield batch.slice(start, batch_rows)
    if not produced and empty is not None:
        yield empty


def _prefetched(make: Callable[[], Generator[pa.RecordBatch, None, None]], depth: int) -> Iterator[pa.RecordBatch]:
    """Run ``make()`` on a background thread, ``depth`` batches ahead of the consumer.

    The drivers and pyarrow release the GIL while they read, decode and cast, so that work
    overlaps the consumer's own (a Parquet write also runs without the GIL). The queue's bound
    keeps memory bounded. The thread opens, uses and closes the connection itself, because
    some drivers (sqlite3) refuse to share a connection across threads.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            # closing(): the engine's cleanup (closing its connection) runs on this thread.
            with closing(make()) as batches:
                for batch in batches:
                    if not put(("batch", batch)):
                        return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))

    def consume() -> Iterator[pa.RecordBatch]:
        thread = threading.Thread(target=produce, name="refit-extract-reader", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = items.get()
                if kind == "batch":
                    yield item
                elif kind == "done":
                    return
                else:
                    raise item
        finally:
            stop.set()
            thread.join()

    return consume()
