"""The two PostgreSQL engines, ``adbc`` and ``copy_csv``: ``COPY (query) TO STDOUT`` as Arrow batches.

Both stream the result with PostgreSQL's ``COPY``, which the server writes faster than a
cursor's rows, and decode it into Arrow without a Python object per value.

``adbc`` (what ``engine="auto"`` picks)
    The ADBC libpq driver runs ``COPY (query) TO STDOUT (FORMAT binary)`` and decodes the
    binary rows into Arrow in C++. It reads only when asked for the next batch, and cuts
    batches by a byte-size hint, so memory is bounded. PostgreSQL writes binary COPY faster
    than CSV, and the server's CPU time to produce the stream sets the speed limit on
    localhost. So this is the fastest bounded path: about as fast as raw binary COPY and as
    ConnectorX, and faster than ``copy_csv``.
``copy_csv`` (used by ``auto`` when the ADBC driver is not installed)
    psycopg 3 ``COPY (query) TO STDOUT (FORMAT csv)``. Whole rows are gathered into blocks of
    up to ``batch_rows`` rows, and each block is parsed by :func:`pyarrow.csv.read_csv` with
    explicit column types taken from the query's result description. Needs only psycopg and
    pyarrow.

Why these are written here rather than taken whole from a library: no library reads a
PostgreSQL result both fast and in bounded memory. ``pandas.read_sql`` needs 9.3 GB for 5M rows
and is 13x slower. ConnectorX's ``return_type="arrow"`` and ADBC's ``fetch_arrow_table`` load the
whole result (846 MB and 1 GB for 5M rows, growing with the table). ConnectorX's
``"arrow_stream"`` mode reads ahead on a background thread with no limit: with a consumer slower
than the warehouse, peak memory grows with the result (measured 744 MB of 5M rows with a
consumer taking 1 s per batch). The ``adbc`` engine runs at 0.93x the raw binary ``COPY``
stream with about 200 MB whatever the size (``bench/bench_extract.py``, ``bench/README.md``).

Parameters and COPY
-------------------
``COPY`` is a utility statement. PostgreSQL cannot bind ``$1`` parameters inside it, and ADBC
given bound parameters runs a prepared statement whose whole result libpq holds in memory. So
both engines inline the values as SQL literals. psycopg's
:meth:`psycopg.ClientCursor.mogrify` writes them on a live connection to the same server: its
quoting knows the connection's encoding and ``standard_conforming_strings``, strings are
escaped as PostgreSQL requires, and datetimes get an explicit ``::timestamp`` cast. psycopg's
own server-side cursors bind values the same way. Our code never formats a value into SQL
text. A value such as ``"x' OR '1'='1"`` stays one string literal. ``COPY`` also accepts one
statement only, so a ``;`` in the query cannot start a second one.

Both engines yield raw record batches (any size, the engine's types), at least one, with zero
rows for an empty result; :func:`ml_tasks.io.warehouse.stream_query` conforms and slices them.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ml_tasks.io.warehouse.types import ExtractTypeError
from ml_tasks.io.warehouse.urls import parse_url

if TYPE_CHECKING:  # imported where used: a worker that never reads PostgreSQL needs no driver
    import psycopg

__all__ = ["adbc_batches", "adbc_uri", "copy_csv_batches", "copy_target", "psycopg_connect", "with_literals"]

# Both COPY engines cut batches by bytes, not rows. About 128 bytes a row aims their batches
# near batch_rows for typical tables. Batches with more rows are sliced, so the cap holds for
# wide rows too.
_BYTES_PER_ROW_HINT = 128
_MIN_BLOCK_BYTES = 1 << 20
_MAX_BLOCK_BYTES = 64 << 20

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


# ---------------------------------------------------------------------------------------------
# Connections and literal binding
# ---------------------------------------------------------------------------------------------


def _libpq_params(url: str) -> dict[str, str]:
    """libpq connection parameters for a SQLAlchemy PostgreSQL URL, whatever its driver."""
    parsed = parse_url(url)
    fields: dict[str, str | int | None] = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
                                           "password": parsed.password, "dbname": parsed.database}
    params = {key: str(value) for key, value in fields.items() if value is not None}
    for key, value in parsed.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    # Text reaches Arrow as UTF-8 whatever the database's encoding. The literal quoting
    # follows this encoding too.
    params["client_encoding"] = "UTF8"
    return params


def psycopg_connect(url: str) -> psycopg.Connection[Any]:
    """A psycopg 3 connection to the warehouse at SQLAlchemy ``url``, in autocommit mode."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    # autocommit: a lone statement needs no transaction, and closing leaves none behind.
    return psycopg.connect(make_conninfo("", **_libpq_params(url)), autocommit=True)


def adbc_uri(url: str) -> str:
    """The libpq URI the ADBC driver connects with, for a SQLAlchemy PostgreSQL ``url``."""
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


def with_literals(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> str:
    """``sql`` with its ``:name`` placeholders replaced by literals quoted by psycopg.

    Needed for the COPY engines (see "Parameters and COPY" above): SQLAlchemy turns the
    placeholders into psycopg's ``%(name)s`` form, and psycopg's :class:`~psycopg.ClientCursor`
    quotes each value for this connection.
    """
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    compiled = text(sql).compile(dialect=PGDialect_psycopg())
    values = compiled.construct_params(dict(params), escape_names=True)
    return psycopg.ClientCursor(conn).mogrify(str(compiled), values)


def copy_target(sql: str) -> str:
    """``sql`` as the parenthesised query ``COPY (...) TO`` takes."""
    # COPY takes a bare SELECT. A trailing ';' would be a syntax error. The newline before ')'
    # keeps a trailing '-- comment' from swallowing the parenthesis.
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    return f"(\n{body}\n)"


def _block_bytes(batch_rows: int) -> int:
    return max(_MIN_BLOCK_BYTES, min(_MAX_BLOCK_BYTES, batch_rows * _BYTES_PER_ROW_HINT))


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


def adbc_batches(url: str, sql: str, params: Mapping[str, Any],
                 batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
    """The ``adbc`` engine: binary ``COPY`` decoded by the ADBC libpq driver."""
    import adbc_driver_postgresql.dbapi as adbc

    # Quoting needs a connection that knows the server's settings. ADBC cannot quote, so psycopg
    # does it on a short-lived connection to the same server.
    with psycopg_connect(url) as conn:
        query = with_literals(conn, sql, params)
    with adbc.connect(adbc_uri(url), autocommit=True) as conn, conn.cursor() as cursor:
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


def copy_csv_batches(url: str, sql: str, params: Mapping[str, Any],
                     batch_rows: int) -> Generator[pa.RecordBatch, None, None]:
    """The ``copy_csv`` engine: CSV ``COPY`` through psycopg, parsed block by block by pyarrow."""
    import pyarrow.csv as pacsv

    with psycopg_connect(url) as conn:
        for statement in _CSV_SESSION:
            conn.execute(statement)
        query = with_literals(conn, sql, params)
        cursor = conn.cursor()
        names, types = _csv_columns(cursor, query)
        # Positional keys: result column names may repeat, CSV column names may not.
        keys = list(types)
        read_options = pacsv.ReadOptions(column_names=keys)
        parse_options = pacsv.ParseOptions(newlines_in_values=True)
        convert_options = pacsv.ConvertOptions(
            column_types=types,
            # COPY CSV writes NULL as an empty unquoted field and '' as "": these settings keep
            # the two apart.
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"],
        )
        produced = False
        with cursor.copy(f"COPY {copy_target(query)} TO STDOUT WITH (FORMAT csv)") as copy:
            for block in _row_blocks(copy, batch_rows):
                try:
                    table = pacsv.read_csv(pa.py_buffer(block), read_options=read_options,
                                           parse_options=parse_options, convert_options=convert_options)
                except pa.ArrowInvalid as exc:
                    raise _csv_error(exc, names, list(types.values())) from None
                for batch in table.to_batches():
                    produced = True
                    yield pa.RecordBatch.from_arrays(batch.columns, names=names)
        if not produced:
            yield _empty_batch(pa.schema([(n, types[k]) for n, k in zip(names, keys, strict=True)]))


def _csv_columns(cursor: psycopg.Cursor[Any], query: str) -> tuple[list[str], dict[str, pa.DataType]]:
    """The result's column names, and the Arrow type of each CSV column keyed ``c0, c1, ...``."""
    # The names and type OIDs fix each CSV column's Arrow type before any row is parsed. With
    # LIMIT 0 the server plans the query but fetches no rows.
    cursor.execute(f"SELECT * FROM {copy_target(query)} AS refit_describe LIMIT 0")
    description = cursor.description or []
    names = [column.name for column in description]
    types = {f"c{i}": _CSV_TYPES_BY_OID.get(column.type_code, pa.string()) for i, column in enumerate(description)}
    return names, types


def _row_blocks(copy: psycopg.Copy, batch_rows: int) -> Generator[bytearray, None, None]:
    """The COPY stream in blocks of whole rows: up to ``batch_rows`` rows, or fewer very wide ones."""
    # PostgreSQL sends COPY TO data one row per message, so a block cut between messages holds
    # whole rows. Each block is parsed on its own, on this thread. pyarrow's streaming reader
    # would pull from the COPY on its own IO thread and read several blocks ahead. That thread
    # would race psycopg's cleanup when the consumer stops early, and the blocks it reads ahead
    # cost memory.
    while True:
        block = bytearray()
        rows = 0
        while rows < batch_rows and len(block) < _MAX_BLOCK_BYTES:  # rows decide, unless rows are very wide
            data = copy.read()
            if not data:
                break
            block += data
            rows += 1
        if not rows:
            return
        yield block


def _csv_error(exc: pa.ArrowInvalid, names: list[str], types: list[pa.DataType]) -> Exception:
    # e.g. "In CSV column #3: Row #120: CSV conversion error to timestamp[us]: invalid value 'infinity'"
    column = re.search(r"CSV column #(\d+)", str(exc))
    if column is None or int(column.group(1)) >= len(names):
        return exc
    index = int(column.group(1))
    value = re.search(r"invalid value '(.*)'", str(exc))
    return ExtractTypeError(names[index], str(types[index]), [value.group(1)] if value else [],
                            reason=f"the CSV engine cannot parse PostgreSQL's text form ({exc})")
