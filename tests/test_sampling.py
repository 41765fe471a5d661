"""clip.batch_sampler=balanced: every batch holds nearly equal numbers of covers per predicted genre,
never one cover twice, and an epoch has as many full batches as the random sampler's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tasks.clip.sampling import balanced_batches, epoch_batches, per_group_counts, random_batches

# A skewed set like the real covers: one genre with most of the books, one with very few.
SKEWED = np.array(["Romance"] * 600 + ["Travel"] * 120 + ["History"] * 60 + ["Law"] * 5)


def test_each_batch_holds_nearly_equal_numbers_per_genre() -> None:
    batches = balanced_batches(SKEWED, 32, np.random.default_rng(0))
    assert len(batches) == len(random_batches(len(SKEWED), 32, np.random.default_rng(0))) == len(SKEWED) // 32
    for batch in batches:
        counts = Counter(SKEWED[batch])
        assert len(batch) == 32 and len(set(batch.tolist())) == 32  # full, no duplicate positives
        assert counts["Law"] == 5  # all it has: a small genre is capped, never repeated within a batch
        others = [counts[g] for g in ("Romance", "Travel", "History")]
        assert max(others) - min(others) <= 1, counts  # 27 spread over 3 genres: 9 each


def test_random_batches_follow_the_skew_and_balanced_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    random_share = np.mean([np.mean(SKEWED[b] == "Law") for b in random_batches(len(SKEWED), 32, rng)])
    balanced_share = np.mean([np.mean(SKEWED[b] == "Law") for b in balanced_batches(SKEWED, 32, rng)])
    assert random_share < 0.02 and balanced_share == pytest.approx(5 / 32)


def test_small_genres_are_revisited_in_fresh_passes_and_every_cover_of_them_is_seen() -> None:
    batches = balanced_batches(SKEWED, 32, np.random.default_rng(2))
    seen = Counter(np.concatenate(batches).tolist())
    travel = np.flatnonzero(SKEWED == "Travel")
    assert all(seen[i] >= 1 for i in travel)  # 24 batches x 9 Travel covers = 216 draws over 120 covers
    assert max(seen[i] for i in travel) - min(seen[i] for i in travel) <= 1  # passes, not random repeats


def test_more_genres_than_a_batch_has_room_for() -> None:
    labels = np.repeat([f"g{i}" for i in range(40)], 10)
    counts = per_group_counts(np.full(40, 10), 16, np.random.default_rng(0))
    assert counts.sum() == 16 and counts.max() == 1
    for batch in balanced_batches(labels, 16, np.random.default_rng(0)):
        assert len(set(labels[batch])) == 16


def test_the_sampler_is_reproducible_from_the_generator_state_and_needs_genres() -> None:
    first = epoch_batches("balanced", len(SKEWED), SKEWED, 32, np.random.default_rng(7))
    again = epoch_batches("balanced", len(SKEWED), SKEWED, 32, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    with pytest.raises(ValueError, match="needs each pair's genre"):
        epoch_batches("balanced", 10, None, 4, np.random.default_rng(0))
    fewer_than_a_batch = epoch_batches("balanced", 5, SKEWED[:5], 32, np.random.default_rng(0))
    assert len(fewer_than_a_batch) == 1 and sorted(fewer_than_a_batch[0].tolist()) == list(range(5))
