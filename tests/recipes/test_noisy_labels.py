"""The fastai CSV's noisy label columns (:func:`imgtools.splits.noisy_labels`): the same seeded
labels as the first version's list-building code (re-typed below), in memory that does not hold
a tuple per image, and without a list of the other classes per changed row."""

from __future__ import annotations

import random
import tracemalloc

from imgtools.splits import NOISE_LEVELS, noisy_labels


def first_version(true: list[str], wnids: list[str], seed: int) -> list[tuple[str, ...]]:
    columns = [list(true)]
    if len(set(wnids)) < 2:
        return list(zip(*(columns * (1 + len(NOISE_LEVELS)))))
    for p in NOISE_LEVELS:
        rng = random.Random(f"{seed}:noise:{p}")
        col = list(true)
        for i in rng.sample(range(len(true)), round(len(true) * p / 100)):
            col[i] = rng.choice([w for w in wnids if w != true[i]])
        columns.append(col)
    return list(zip(*columns))


def test_the_same_labels_as_before_for_any_number_of_classes():
    r = random.Random(1)
    for classes in (1, 2, 3, 10, 1000):
        wnids = [f"n{i:08d}" for i in range(classes)]
        true = [r.choice(wnids) for _ in range(3000)]
        for seed in (0, 7):
            assert list(noisy_labels(true, wnids, seed)) == first_version(true, wnids, seed)


def test_rows_are_made_as_they_are_read():
    """300,000 rows: a tuple per row held at once would be over 30 MB; the columns are 2
    bytes a label, and rng.sample's pool is the transient peak."""
    wnids = [f"n{i:08d}" for i in range(1000)]
    true = [wnids[i % 1000] for i in range(300_000)]
    tracemalloc.start()
    try:
        rows = noisy_labels(true, wnids, 0)
        first = next(rows)
        held, peak = tracemalloc.get_traced_memory()
        for _ in rows:
            pass
    finally:
        tracemalloc.stop()
    assert first[0] == wnids[0] and len(first) == 1 + len(NOISE_LEVELS)
    assert held < 6_000_000, held  # 5 columns of 300,000 int16 labels: 3 MB
    assert peak < 25_000_000, peak
