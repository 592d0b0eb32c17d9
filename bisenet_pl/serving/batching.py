"""A small asyncio micro-batcher: requests that arrive close together run through the network as one
batch.

Why our own and not LitServe's: see docs/serving.md#why-fastapi-and-not-litserve. The rule: the oldest
waiting request opens a window of `timeout_ms`; the batch takes the waiting requests of the same `key`
(for images: the same size, so that they stack into one tensor) and closes when `max_size` of them are
in or the window ends, whichever is first. Requests of other keys wait for a batch of their own, in
arrival order. The batch then runs in one dedicated worker thread (so the event loop keeps reading
and answering requests, and the model never runs two batches at once), while the next batch gathers.
A request therefore waits at most `timeout_ms` plus the batch ahead of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """Counters for /health: requests and batches seen, and how many batches had each size."""

    requests: int = 0
    batches: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, size: int) -> None:
        with self._lock:
            self.requests += size
            self.batches += 1
            self.sizes[size] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "batches": self.batches,
                "largest": max(self.sizes, default=0),
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            }


class MicroBatcher(Generic[Item, Result]):
    """Collect `submit`ted items into batches of equal `key(item)` for `process(items) -> results` (one
    result per item, in order).

    `process` runs in a single worker thread; an exception it raises fails every request of its batch.
    Use inside a running event loop: `start()` once, `submit()` per request, `stop()` at shutdown.
    """

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        max_size: int = 8,
        timeout_ms: float = 10.0,
        key: Callable[[Item], Hashable] = lambda item: None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"batch.max_size={max_size}: must be at least 1")
        if timeout_ms < 0:
            raise ValueError(f"batch.timeout_ms={timeout_ms}: must be 0 or more")
        self.process = process
        self.key = key
        self.max_size = max_size
        self.timeout_s = timeout_ms / 1000.0
        self.stats = BatchStats()
        self._pending: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._arrived = asyncio.Event()  # of this loop: an app may be started again in another one
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bisenet-batch")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, item: Item) -> Result:
        """The result of `item`, once the batch it joined has run."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._arrived.set()
        return await future

    def _same_key(self, key: Hashable) -> int:
        return sum(1 for item, _ in self._pending if self.key(item) == key)

    async def _gather(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """Wait for a first request, then for more of its key until the batch is full or the window
        closes; the batch's requests leave the queue, the others keep their places."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        key = self.key(self._pending[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while self._same_key(key) < self.max_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        rest: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        for entry in self._pending:
            (batch if len(batch) < self.max_size and self.key(entry[0]) == key else rest).append(entry)
        self._pending = rest
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.process, [i for i, _ in batch])
            except Exception as e:  # the batch's requests answer with it; the batcher keeps running
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.stats.record(len(batch))
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


__all__ = ["BatchStats", "MicroBatcher"]
