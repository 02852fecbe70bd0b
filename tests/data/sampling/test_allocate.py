"""allocate: quotas within size, floor, cap and population; label shares; errors naming the parameter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_tasks.data.sampling import allocate

populations = st.lists(st.integers(0, 5_000), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(populations, st.integers(0, 20_000), st.integers(0, 300), st.one_of(st.none(), st.integers(0, 3_000)))
def test_allocate_respects_size_floor_cap_and_population(sizes, size, floor, cap):
    counts = {(i,): n for i, n in enumerate(sizes)}
    got = allocate(counts, size, floor=floor, cap=cap)
    assert list(got) == list(counts) and got == allocate(counts, size, floor=floor, cap=cap)
    high = {k: n if cap is None else min(n, cap) for k, n in counts.items()}
    low = {k: min(floor, high[k]) for k in counts}
    total = sum(got.values())
    assert all(0 <= got[k] <= high[k] for k in counts)
    assert total == min(size, sum(high.values()))
    if sum(low.values()) <= size:
        assert all(got[k] >= low[k] for k in counts)
        # Strata strictly between their bounds are allocated in proportion to their size.
        inner = [k for k in counts if low[k] < got[k] < high[k]]
        for a in inner:
            for b in inner:
                assert got[a] / counts[a] <= got[b] / counts[b] + 1 / counts[a] + 1 / counts[b] + 1e-9
        # A stratum at its floor gets less than one row more than its proportional share
        # (it may have been rounded down to the floor): lam < (floor + 1) / N.
        for a in (k for k in counts if got[k] == low[k] < high[k]):
            for b in inner:
                assert (got[b] - 1) / counts[b] <= (got[a] + 1) / counts[a] + 1e-9
    else:
        # Floors do not fit: as equal as possible, small strata kept whole first.
        short = [k for k in counts if got[k] < low[k]]
        assert all(got[k] <= min(got[s] for s in short) + 1 for k in counts if short)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 50_000), min_size=2, max_size=4),
       st.lists(st.integers(1, 50_000), min_size=2, max_size=4),
       st.floats(0.0, 1.0), st.integers(10, 2_000))
def test_allocate_label_shares_set_each_labels_share_and_split_it_by_population(zeros, ones, share, size):
    counts = {**{(0, f"s{i}"): n for i, n in enumerate(zeros)}, **{(1, f"s{i}"): n for i, n in enumerate(ones)}}
    got = allocate(counts, size, label_shares={1: share})
    assert sum(got.values()) == min(size, sum(counts.values())) or share in (0.0, 1.0)
    assert all(0 <= got[k] <= counts[k] for k in counts)
    target = share * size
    positives = sum(n for k, n in got.items() if k[0] == 1)
    if target <= sum(ones) and size - target <= sum(zeros):  # neither label runs out of rows
        assert abs(positives - target) <= len(ones) + len(zeros)
        for label, group in ((0, zeros), (1, ones)):
            label_total = sum(n for k, n in got.items() if k[0] == label)
            for i, n in enumerate(group):
                assert abs(got[(label, f"s{i}")] - label_total * n / sum(group)) <= len(group) + 1


def test_allocate_examples_floor_cap_and_label_position():
    counts = {("web", 0): 9_000, ("web", 1): 400, ("app", 0): 550, ("app", 1): 50}
    assert allocate(counts, 1_000) == {("web", 0): 900, ("web", 1): 40, ("app", 0): 55, ("app", 1): 5}
    floored = allocate(counts, 1_000, floor=100)
    assert floored[("app", 1)] == 50 and floored[("web", 1)] == 100 and sum(floored.values()) == 1_000
    capped = allocate(counts, 1_000, cap=500)
    assert capped[("web", 0)] == 500 and sum(capped.values()) == 1_000
    shares = allocate(counts, 1_000, label_shares={1: 0.4}, label_position=1)
    assert sum(n for k, n in shares.items() if k[1] == 1) == 400
    assert shares[("web", 1)] == 356 and shares[("app", 1)] == 44  # 400 split 400 : 50
    assert allocate(counts, 10**9) == counts
    assert allocate({}, 10) == {}
    assert allocate({(0,): 5, (1,): 5, (2,): 100}, 9, floor=4) == {(0,): 3, (1,): 3, (2,): 3}


def test_allocate_rejects_bad_parameters_naming_them():
    with pytest.raises(ValueError, match="size"):
        allocate({(0,): 1}, -1)
    with pytest.raises(ValueError, match="floor"):
        allocate({(0,): 1}, 1, floor=-2)
    with pytest.raises(ValueError, match="label_shares"):
        allocate({(0,): 1}, 1, label_shares={0: 0.7, 1: 0.6})
    with pytest.raises(ValueError, match=r"label_shares\[1\]"):
        allocate({(0,): 1}, 1, label_shares={1: -0.1})
    with pytest.raises(ValueError, match="label_position=3"):
        allocate({(0,): 1}, 1, label_shares={0: 0.5}, label_position=3)
