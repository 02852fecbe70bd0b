"""Streams of Arrow record batches: read the next ones ahead on a thread, cut them to a size.

Two pieces every reader of large data here shares, the warehouse extraction
(:mod:`ml_tasks.io.warehouse`) and the sampler's Parquet pass (:mod:`ml_tasks.data.sampling`):

:func:`read_ahead`
    Runs a batch source on a background thread, a bounded number of batches ahead of the
    consumer. The drivers, pyarrow and numpy release the GIL while they read, decode, cast and
    compute, so the source's work overlaps the consumer's (a Parquet write, the sampler's
    arithmetic): about a fifth off the sampler's wall time on 2 cores, and the extraction keeps
    pace with the raw ``COPY`` stream (``bench/README.md``).
:func:`at_most`
    Cuts batches longer than a row limit into zero-copy slices, so a consumer's per-batch memory
    (codes, sort orders, a Parquet row group) stays bounded whatever size the source chose.

::

    with closing(read_ahead(lambda: parquet_file.iter_batches(batch_size=65_536))) as batches:
        for batch in at_most(batches, 10_000):
            ...

Why written here: the readers need a bound on how far ahead the reading thread gets, and the
source opened, iterated and closed on that thread (a sqlite3 connection cannot cross threads).
ConnectorX's ``arrow_stream`` reads ahead with no bound (744 MB for 5M rows behind a slow
consumer, ``ml_tasks.io.warehouse.postgres``); pyarrow's dataset scanner bounds its read-ahead
but reads only sources it opens itself, never a database cursor; ``concurrent.futures`` runs
calls, not a bounded stream.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

__all__ = ["READ_AHEAD_BATCHES", "at_most", "read_ahead"]

T = TypeVar("T")

#: Batches a read-ahead thread may hold ready while the consumer works: two overlap the read
#: with the consumer's work and cap memory at a few batches.
READ_AHEAD_BATCHES = 2
# How often a producer waiting on a full queue checks whether the consumer has left.
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class _Failed:
    """The source raised: carried to the consumer's thread, which re-raises it."""

    error: BaseException


class _End:
    """Queued after the source's last item."""


def read_ahead(open_source: Callable[[], Iterable[T]], *, depth: int = READ_AHEAD_BATCHES,
               name: str = "refit-read-ahead") -> Generator[T, None, None]:
    """Yield the items of ``open_source()``, produced on a background thread up to ``depth`` ahead.

    Parameters
    ----------
    open_source : callable returning an iterable
        Called on the background thread, which also iterates it and, when it has a ``close()``
        (a generator does), closes it there. So a source can open, use and close its resources
        on one thread: sqlite3 refuses a connection made on another thread.
    depth : int, default :data:`READ_AHEAD_BATCHES`
        Most items waiting in the queue. Memory is bounded by about ``depth + 2`` items: the
        queue, the one the producer is making and the one the consumer holds.
    name : str
        The thread's name, as debuggers and ``py-spy`` show it.

    Yields
    ------
    The source's items, in order.

    Raises
    ------
    ValueError
        At call time: ``depth`` is not a positive integer.

    Whatever ``open_source`` or the iteration raised is re-raised in the consumer when it
    reaches that point of the stream, after the source was closed.

    Notes
    -----
    The thread starts at the first ``next()``. Leaving early, by ``close()``, ``break`` inside a
    ``with closing(...)`` block or an error in the consumer there, stops the thread and closes
    the source before ``close()`` returns. Without ``close()`` that happens when the generator
    is garbage collected.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    return _consume(open_source, depth, name)


def _consume(open_source: Callable[[], Iterable[T]], depth: int, name: str) -> Generator[T, None, None]:
    items: queue.Queue[T | _Failed | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(open_source, items, stop), name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()  # a producer blocked on the full queue notices within _POLL_SECONDS
        thread.join()


def _produce(open_source: Callable[[], Iterable[T]], items: queue.Queue[T | _Failed | _End],
             stop: threading.Event) -> None:
    """The background thread: the source's items into the queue until it ends or the consumer leaves."""
    try:
        source = open_source()
        try:
            for item in source:
                if not _put(items, item, stop):
                    return
        finally:
            # The source's cleanup (closing a connection) runs on the thread that opened it.
            close = getattr(source, "close", None)
            if close is not None:
                close()
        _put(items, _End(), stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(items, _Failed(exc), stop)


def _put(items: queue.Queue[T], item: T, stop: threading.Event) -> bool:
    """Queue ``item`` unless the consumer has left; False when it has."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def at_most(batches: Iterable[pa.RecordBatch], max_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``batches`` in order, in batches of at most ``max_rows`` rows.

    A longer batch is cut into zero-copy slices (views of its buffers); shorter ones pass
    unchanged. Empty batches are dropped, except the first one when no batch has any rows: a
    stream always keeps a batch to carry its schema when it had one to begin with.

    ``max_rows`` is the caller's to validate (each names its own parameter in the message).

    >>> table = pa.table({"x": range(5)})
    >>> [b.num_rows for b in at_most(table.to_batches(), 2)]
    [2, 2, 1]
    >>> empty = table.to_batches()[0].slice(0, 0)
    >>> [b.num_rows for b in at_most([empty, empty], 2)], [b.num_rows for b in at_most([empty, *table.to_batches()], 9)]
    ([0], [5])
    """
    empty: pa.RecordBatch | None = None
    produced = False
    for batch in batches:
        if batch.num_rows == 0:
            if empty is None:
                empty = batch
            continue
        produced = True
        if batch.num_rows <= max_rows:
            yield batch
            continue
        for start in range(0, batch.num_rows, max_rows):
            yield batch.slice(start, max_rows)
    if not produced and empty is not None:
        yield empty
