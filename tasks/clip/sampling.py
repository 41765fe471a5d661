"""The order of an epoch's training pairs: shuffled (`random`), or batches that hold nearly equal
numbers of covers per predicted genre (`balanced`, clip.batch_sampler).

Why balanced: with a few large genres, most in-batch negatives of a cover come from its own genre's
crowd and the small genres are rarely seen; the product-attribute CLIP fine-tuning this project
follows draws batches per class to keep the model from learning that skew. Small genres are
revisited (each pass reshuffled) and large ones subsampled within an epoch, never the same cover twice
in one batch, so a contrastive batch has no duplicate positives. Both samplers yield the same number
of full batches per epoch, so the schedule and the epoch budget do not depend on the choice.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BatchSampler = Literal["random", "balanced"]


def random_batches(size: int, batch_size: int, generator: np.random.Generator | None) -> list[np.ndarray]:
    """Shuffled full batches when training (a short last batch has too few negatives), in order otherwise."""
    order = generator.permutation(size) if generator is not None else np.arange(size)
    if generator is not None and size >= batch_size:
        return [order[i:i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]
    return [order[i:i + batch_size] for i in range(0, size, batch_size) if len(order[i:i + batch_size]) > 1]


def per_group_counts(pool_sizes: np.ndarray, batch_size: int, generator: np.random.Generator) -> np.ndarray:
    """How many covers of each group one batch takes: equal shares, the remainder to groups drawn at random,
    no group more than it holds (its shortfall goes to groups with room)."""
    groups = len(pool_sizes)
    counts = np.full(groups, batch_size // groups)
    counts[generator.choice(groups, batch_size % groups, replace=False)] += 1
    counts = np.minimum(counts, pool_sizes)
    while (missing := batch_size - counts.sum()) > 0:
        room = np.flatnonzero(counts < pool_sizes)
        chosen = generator.choice(room, min(missing, len(room)), replace=False)
        counts[chosen] += 1
    return counts


class _Pool:
    """One group's pairs, dealt in reshuffled passes; a batch never takes the same pair twice."""

    def __init__(self, members: np.ndarray, generator: np.random.Generator) -> None:
        self.members, self.generator = members, generator
        self.order, self.cursor = generator.permutation(members), 0

    def take(self, count: int) -> np.ndarray:
        taken = self.order[self.cursor:self.cursor + count]
        self.cursor += count
        if len(taken) < count:  # end of a pass: a fresh shuffle, minus what this batch already holds
            fresh = self.generator.permutation(np.setdiff1d(self.members, taken))
            self.order, self.cursor = fresh, count - len(taken)
            taken = np.concatenate([taken, fresh[:self.cursor]])
        return taken


def balanced_batches(groups: np.ndarray, batch_size: int, generator: np.random.Generator) -> list[np.ndarray]:
    """As many full batches as `random_batches` makes, each with nearly equal numbers per group."""
    size = len(groups)
    if size < batch_size:
        return random_batches(size, batch_size, generator)
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    pools = [_Pool(np.flatnonzero(inverse == g), generator) for g in range(inverse.max() + 1)]
    sizes = np.array([len(pool.members) for pool in pools])
    batches = []
    for _ in range(size // batch_size):
        counts = per_group_counts(sizes, batch_size, generator)
        batch = np.concatenate([pool.take(int(n)) for pool, n in zip(pools, counts) if n])
        batches.append(generator.permutation(batch))
    return batches


def epoch_batches(sampler: BatchSampler, size: int, groups: np.ndarray | None, batch_size: int,
                  generator: np.random.Generator) -> list[np.ndarray]:
    if sampler == "balanced":
        if groups is None:
            raise ValueError("clip.batch_sampler=balanced needs each pair's genre")
        return balanced_batches(groups, batch_size, generator)
    return random_batches(size, batch_size, generator)
