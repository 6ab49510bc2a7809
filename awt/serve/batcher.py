"""The bounded queue and the one thread that owns the model.

Requests put their images in the queue as items; the model's thread takes a batch of items that
can share one encoding (the same number of random views), up to ``batch_size`` of them, waiting at
most ``max_wait`` after the first for more to come, and hands it to the engine. Jobs (encoding a
class set's prompts) run on the same thread between batches, so the model is only ever used from
it. The queue holds at most ``queue_size`` images: a request that does not fit is refused at once
(:class:`QueueFull`, with an estimate of when to come back), never left to wait without bound.

Each item's result is a :class:`concurrent.futures.Future`: a client that goes away cancels its
items, and a cancelled item still waiting is dropped before it costs the model anything.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

_log = logging.getLogger(__name__)


@dataclass(eq=False)
class Item:
    """One uploaded image of a request, waiting for its result."""

    name: str                     # what its result calls it (the upload's file name)
    data: bytes                   # the file's bytes
    class_set: Any                # a ClassSet (awt.serve.class_sets)
    method: str
    top_k: int
    views: int                    # random views its method reads: items with equal counts share a batch
    future: Future = field(default_factory=Future)   # -> ImageResult
    enqueued: float = field(default_factory=time.monotonic)


class QueueFull(Exception):
    """The queue cannot take a request's images now; ``retry_after``: seconds until it likely can."""

    def __init__(self, waiting: int, capacity: int, retry_after: int):
        super().__init__(f"the queue is full ({waiting} of {capacity} images waiting)")
        self.waiting, self.capacity, self.retry_after = waiting, capacity, retry_after


class Batcher:
    """The queue, and the model's thread that empties it batch by batch.

    ``run_batch(items)`` does the work of one batch on the model's thread and settles each item's
    future (the batcher settles those it leaves unsettled, with the exception it raised).
    ``observe(size, seconds)`` is told of each batch; ``depth(n)`` of each change of the queue's depth.
    """

    def __init__(self, run_batch: Callable[[list[Item]], None], *, batch_size: int, max_wait: float,
                 queue_size: int, observe: Callable[[int, float], None] = lambda n, s: None,
                 depth: Callable[[int], None] = lambda n: None):
        if batch_size < 1 or queue_size < 1 or max_wait < 0:
            raise ValueError("batch_size and queue_size must be >= 1, max_wait >= 0")
        self._run_batch, self._observe, self._depth = run_batch, observe, depth
        self.batch_size, self.max_wait, self.queue_size = batch_size, max_wait, queue_size
        self._queue: collections.deque[Item] = collections.deque()
        self._jobs: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._seconds_per_image = 0.0   # a moving average, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="awt-model", daemon=True)

    # -- the requests' side --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def waiting(self) -> int:
        """Images in the queue now."""
        return len(self._queue)

    def submit(self, items: Sequence[Item]) -> None:
        """Queue a request's images, all or none: :class:`QueueFull` when they do not fit."""
        with self._cond:
            if self._stopping:
                raise QueueFull(len(self._queue), self.queue_size, 1)
            if len(self._queue) + len(items) > self.queue_size:
                raise QueueFull(len(self._queue), self.queue_size, self.retry_after(len(items)))
            self._queue.extend(items)
            self._depth(len(self._queue))
            self._cond.notify()

    def retry_after(self, extra: int = 0) -> int:
        """Whole seconds until the queue has likely room for ``extra`` more images (1 to 60)."""
        estimate = (len(self._queue) + extra) * self._seconds_per_image
        return int(min(60, max(1, math.ceil(estimate))))

    def cancel(self, items: Sequence[Item]) -> int:
        """Cancel the items not yet taken into a batch (their client went away, or its time ran
        out); returns how many were."""
        cancelled = 0
        with self._cond:
            for item in items:
                if item.future.cancel():
                    cancelled += 1
                    try:
                        self._queue.remove(item)
                    except ValueError:
                        pass
            self._depth(len(self._queue))
        return cancelled

    def call(self, job: Callable[[], Any]) -> Future:
        """Run ``job`` on the model's thread, before the next batch; its result or exception comes
        in the future."""
        future: Future = Future()
        with self._cond:
            if self._stopping:
                raise RuntimeError("the model's thread is stopping")
            self._jobs.append((job, future))
            self._cond.notify()
        return future

    def stop(self, timeout: float | None = None) -> bool:
        """Take nothing new; the thread ends once the queue is empty. True when it has ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the model's thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._jobs and not self._stopping:
                    self._cond.wait()
                if self._jobs:
                    job, future = self._jobs.popleft()
                    batch = None
                elif self._queue:
                    job, batch = None, self._gather()
                else:   # stopping, and nothing left
                    return
            if job is not None:
                _settle(future, job)
            elif batch:
                self._run(batch)

    def _gather(self) -> list[Item]:
        """A batch: the first item waiting and those that can share its encoding, once there are
        ``batch_size`` of them or ``max_wait`` has passed since it came (called holding the lock)."""
        views = self._queue[0].views
        deadline = self._queue[0].enqueued + self.max_wait
        while not self._stopping and not self._jobs:
            if sum(1 for it in self._queue if it.views == views) >= self.batch_size:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._queue:
                break
            self._cond.wait(remaining)
        batch, keep = [], collections.deque()
        for item in self._queue:
            if len(batch) < self.batch_size and item.views == views:
                if item.future.set_running_or_notify_cancel():   # False: cancelled meanwhile
                    batch.append(item)
            else:
                keep.append(item)
        self._queue = keep
        self._depth(len(keep))
        return batch

    def _run(self, batch: list[Item]) -> None:
        start = time.perf_counter()
        try:
            self._run_batch(batch)
        except Exception as e:   # the batch's own failure: its items say so, the thread goes on
            _log.error(f"a batch of {len(batch)} image(s) failed: {type(e).__name__}: {e}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
        seconds = time.perf_counter() - start
        per_image = seconds / len(batch)
        self._seconds_per_image = per_image if not self._seconds_per_image else \
            0.8 * self._seconds_per_image + 0.2 * per_image
        self._observe(len(batch), seconds)


def _settle(future: Future, job: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(job())
    except Exception as e:
        future.set_exception(e)
