"""Batches of a dataset for one rank, collated, prefetched on a thread, resumable."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from sslfast.data.sampler import ResumableSampler, example_seeds

__all__ = ["BatchLoader"]


class BatchLoader:
    """Iterate ``collate([dataset[i] for i in batch], seeds)`` over the micro-batches of a
    :class:`ResumableSampler` (``batch_size`` per rank and micro-step; see there for ``accumulation``).

    One ``for`` loop runs from the current position to the end of the epoch; :meth:`forever` crosses
    epochs. ``state_dict()`` counts the batches *handed out* (not those prefetched), so saving it with
    a checkpoint and calling ``load_state_dict`` in a fresh process continues exactly. ``prefetch``
    batches are built ahead on a background thread (0: build on demand).
    """

    def __init__(self, dataset, collate: Callable, *, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, accumulation: int = 1, drop_last: bool = True,
                 prefetch: int = 2):
        if len(dataset) == 0:
            raise ValueError("BatchLoader: the dataset is empty")
        self.dataset, self.collate, self.prefetch = dataset, collate, prefetch
        self.sampler = ResumableSampler(len(dataset), batch_size=batch_size, seed=seed, shuffle=shuffle, rank=rank,
                                        world_size=world_size, accumulation=accumulation, drop_last=drop_last)

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def make_batch(self, epoch: int, k: int) -> dict:
        """The collated batch ``k`` of ``epoch`` for this rank (no effect on the position)."""
        indices = self.sampler.batch(epoch, k)
        examples = [self.dataset[int(i)] for i in indices]
        return self.collate(examples, example_seeds(self.sampler.seed, epoch, indices))

    def _positions(self):
        epoch, k = self.sampler.epoch, self.sampler.batches_done
        while True:
            yield epoch, k
            k += 1
            if k >= len(self.sampler):
                epoch, k = epoch + 1, 0

    def _iterate(self, crossing_epochs: bool) -> Iterator[dict]:
        start_epoch = self.sampler.epoch
        positions = self._positions()
        if not crossing_epochs:
            positions = _until_epoch_end(positions, start_epoch)
        if self.prefetch <= 0:
            for epoch, k in positions:
                batch = self.make_batch(epoch, k)
                self.sampler.advance()
                yield batch
            return
        yield from self._prefetched(positions)

    def _prefetched(self, positions) -> Iterator[dict]:
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for epoch, k in positions:
                    if not put(("batch", self.make_batch(epoch, k))):
                        return
                put(("end", None))
            except BaseException as err:  # handed to the consumer, raised there
                put(("error", err))

        thread = threading.Thread(target=work, name="sslfast-batch-loader", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = out.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                self.sampler.advance()
                yield value
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[dict]:
        return self._iterate(crossing_epochs=False)

    def forever(self) -> Iterator[dict]:
        """Batches across epochs, without end."""
        return self._iterate(crossing_epochs=True)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def _until_epoch_end(positions, epoch):
    for e, k in positions:
        if e != epoch:
            return
        yield e, k
