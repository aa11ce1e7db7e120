"""Deterministic, resumable, rank-sharded order of examples.

Epoch e visits a permutation of the examples drawn from (seed, e). A global batch is a contiguous slice
of that permutation, dealt round-robin to ``world_size × accumulation`` micro-batch slots (rank r's j-th
micro-batch of a step is slot ``r + world_size·j``), so every global batch holds the same examples whatever
the world size, and one process accumulating two micro-batches sees exactly the micro-batches that two
processes see, one each. The position (epoch, batches done) is the sampler's state: a checkpoint saves it
and a resumed run continues with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["ResumableSampler", "example_seeds"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def example_seeds(seed: int, epoch: int, indices) -> np.ndarray:
    """(N,) int64 seeds, one per (seed, epoch, example index): what an example's random choices use."""
    base = _mix64(_mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)) ^ np.uint64(epoch))
    return (_mix64(base ^ np.asarray(indices, dtype=np.uint64)) >> np.uint64(1)).astype(np.int64)


class ResumableSampler:
    """Micro-batches of example indices for one rank: ``len()`` per epoch, ``batch(epoch, k)``, and a
    position (``epoch``, ``batches_done``) saved by :meth:`state_dict` and restored by :meth:`load_state_dict`.

    ``batch_size`` is this rank's micro-batch; ``accumulation`` micro-batches per rank make one global batch
    of ``batch_size * world_size * accumulation`` examples. With ``drop_last`` (the default) the tail that
    fills no global batch is skipped; otherwise the epoch wraps around to fill the last global batch, so
    every rank runs the same number of micro-batches.
    """

    def __init__(self, num_examples: int, *, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, accumulation: int = 1, drop_last: bool = True):
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        if batch_size < 1 or accumulation < 1:
            raise ValueError(f"batch_size and accumulation must be positive, got {batch_size} and {accumulation}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.rank, self.world_size, self.accumulation, self.drop_last = rank, world_size, accumulation, drop_last
        self.global_batch = batch_size * world_size * accumulation
        if drop_last and num_examples < self.global_batch:
            raise ValueError(f"{num_examples} examples fill no global batch of {self.global_batch} "
                             f"(batch_size {batch_size} × world_size {world_size} × accumulation {accumulation}); "
                             f"lower the batch size")
        self.epoch, self.batches_done = 0, 0
        self._order_epoch, self._order = None, None
        self._order_lock = threading.Lock()  # the loader's prefetch thread and the caller may both ask

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch."""
        if self.drop_last:
            return self.num_examples // self.global_batch
        return -(-self.num_examples // self.global_batch)

    def __len__(self) -> int:
        """This rank's micro-batches per epoch."""
        return self.steps_per_epoch * self.accumulation

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of all example indices (cached for the current epoch)."""
        with self._order_lock:
            if self._order_epoch != epoch:
                n = self.num_examples
                self._order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else \
                    np.arange(n)
                self._order_epoch = epoch
            return self._order

    def batch(self, epoch: int, k: int) -> np.ndarray:
        """This rank's indices of micro-batch ``k`` of ``epoch`` (micro-batch ``k % accumulation`` of global
        batch ``k // accumulation``)."""
        if not 0 <= k < len(self):
            raise IndexError(f"micro-batch {k} of an epoch of {len(self)}")
        step, micro = divmod(k, self.accumulation)
        slots = self.world_size * self.accumulation
        first = step * self.global_batch + self.rank + self.world_size * micro
        positions = first + slots * np.arange(self.batch_size)
        return self.order(epoch)[positions % self.num_examples]  # wraps only in the last batch without drop_last

    def advance(self) -> None:
        """Count one micro-batch as consumed (rolling over to the next epoch at its end)."""
        self.batches_done += 1
        if self.batches_done >= len(self):
            self.epoch, self.batches_done = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "steps_done": self.batches_done / self.accumulation,
                "batches_done": self.batches_done, "accumulation": self.accumulation, "world_size": self.world_size,
                "batch_size": self.batch_size, "seed": self.seed,
                "num_examples": self.num_examples, "global_batch": self.global_batch, "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``. The data (example count, seed, order, global batch) must be the same; its
        split over ranks and accumulation may differ when the state is at a global-batch boundary (a run saved
        with 2 processes resumes on 1 accumulating 2 micro-batches)."""
        for key in ("num_examples", "seed", "shuffle", "drop_last", "global_batch"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume the data order: saved {key}={state[key]!r}, this run has "
                                 f"{getattr(self, key)!r}")
        steps, within = divmod(int(state["batches_done"]), int(state.get("accumulation", 1)))
        if within and (state.get("accumulation", 1), state.get("world_size", 1)) != (self.accumulation,
                                                                                      self.world_size):
            raise ValueError("cannot change the micro-batch split (world size or accumulation) in the middle of a "
                             "global batch")
        self.epoch = int(state["epoch"])
        self.batches_done = steps * self.accumulation + within
