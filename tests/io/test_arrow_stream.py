"""read_ahead and at_most: a bounded queue filled on a background thread that stops when the
consumer leaves, errors re-raised where the consumer is, the source opened and closed on its own
thread, and zero-copy slicing that keeps one batch for an empty stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pyarrow as pa
import pytest

from ml_tasks.io.arrow_stream import at_most, read_ahead


def readers(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


class Source:
    """Counts the items made, and records which thread opened, iterated and closed it."""

    def __init__(self, items: int, fail_at: int | None = None) -> None:
        self.items, self.fail_at = items, fail_at
        self.made = 0
        self.threads: dict[str, int] = {}
        self.closed = threading.Event()

    def open(self) -> Iterator[int]:
        self.threads["open"] = threading.get_ident()
        return self._items()

    def _items(self) -> Iterator[int]:
        try:
            for i in range(self.items):
                if i == self.fail_at:
                    raise KeyError(f"row {i} is unreadable")
                self.threads["iterate"] = threading.get_ident()
                self.made += 1
                yield i
        finally:
            self.threads["close"] = threading.get_ident()
            self.closed.set()


def test_items_arrive_in_order_and_the_source_lives_on_one_other_thread():
    source = Source(100)
    assert list(read_ahead(source.open, name="refit-test-order")) == list(range(100))
    assert source.closed.is_set()
    assert len(set(source.threads.values())) == 1  # opened, iterated and closed on the same thread
    assert source.threads["open"] != threading.get_ident()
    assert not readers("refit-test-order")


def test_the_producer_stays_at_most_depth_items_ahead_of_a_slow_consumer():
    source = Source(1_000)
    batches = read_ahead(source.open, depth=3, name="refit-test-bound")
    assert next(batches) == 0
    time.sleep(0.3)  # ample time for an unbounded producer to make all 1,000
    # One taken, three queued, one made and waiting to be queued.
    assert source.made <= 1 + 3 + 1, source.made
    batches.close()


def test_leaving_early_stops_the_thread_and_closes_the_source_on_it():
    source = Source(1_000_000)
    with closing(read_ahead(source.open, name="refit-test-early")) as batches:
        for item in batches:
            if item == 5:
                break
    assert source.closed.is_set() and source.made < 100
    assert source.threads["close"] == source.threads["open"] != threading.get_ident()
    assert not readers("refit-test-early")


def test_an_error_in_the_consumer_stops_the_thread_too():
    source = Source(1_000_000)
    with pytest.raises(RuntimeError, match="consumer failed"), \
            closing(read_ahead(source.open, name="refit-test-consumer-error")) as batches:
        for item in batches:
            if item == 3:
                raise RuntimeError("consumer failed")
    assert source.closed.is_set() and not readers("refit-test-consumer-error")


def test_an_error_in_the_source_is_raised_in_the_consumer_after_the_items_before_it():
    source = Source(10, fail_at=4)
    got = []
    with pytest.raises(KeyError, match="row 4 is unreadable"):
        for item in read_ahead(source.open, name="refit-test-error"):
            got.append(item)
    assert got == [0, 1, 2, 3]
    assert source.closed.is_set() and not readers("refit-test-error")


def test_an_error_opening_the_source_is_raised_in_the_consumer():
    def broken() -> Iterator[int]:
        raise ConnectionError("warehouse unreachable")

    with pytest.raises(ConnectionError, match="warehouse unreachable"):
        next(read_ahead(broken))


def test_depth_must_be_a_positive_integer():
    for depth in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="depth must be a positive integer"):
            read_ahead(lambda: [1], depth=depth)


def batch(rows: int, start: int = 0) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(start, start + rows), pa.int64())})


def test_at_most_slices_long_batches_without_copying_and_passes_short_ones():
    long, short = batch(10), batch(3, start=10)
    out = list(at_most([long, short], 4))
    assert [b.num_rows for b in out] == [4, 4, 2, 3]
    assert pa.Table.from_batches(out).column("x").to_pylist() == list(range(13))
    assert out[-1] is short
    # Zero-copy: every slice points into the long batch's own buffer.
    assert {b.column(0).buffers()[1].address for b in out[:3]} == {long.column(0).buffers()[1].address}


def test_at_most_drops_empty_batches_but_keeps_one_when_nothing_else_came():
    empty = batch(0)
    assert [b.num_rows for b in at_most([empty, batch(2), empty, batch(1)], 5)] == [2, 1]
    only = list(at_most([empty, batch(0)], 5))
    assert len(only) == 1 and only[0] is empty  # the first one, carrying the schema
    assert list(at_most([], 5)) == []
