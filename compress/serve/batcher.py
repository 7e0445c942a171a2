"""Micro-batching: requests arriving together are served by one call of a batch function.

`MicroBatcher(fn, max_batch, max_wait_s)`: `await submit(items)` queues a request's items (rows,
events); one background task takes the queue's requests in arrival order until they hold
`max_batch` items or `max_wait_s` has passed since the first was taken (it waits only while fewer items
than the previous batch's have come: a lone request under light load is not delayed), calls `fn(all items)` in a
worker thread (one batch at a time: the event loop keeps accepting requests meanwhile, and they form
the next batch), and hands each request its slice of the results. A request larger than max_batch is
one batch of its own (fn chunks it). An exception of fn goes to every request of its batch.
asyncio only; no server needed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 64, max_wait_s: float = 0.002,
                 name: str = "batch", on_batch: Callable[[int, int], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait must not be negative")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.on_batch = on_batch  # (items, requests) of every batch run: metrics
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future]] | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.last_items = 1

    def start(self) -> None:
        if self.task is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        """The results of `items`, in order, once their batch has run."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))  # type: ignore[union-attr]
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self.queue
        assert queue is not None
        carry: tuple[list[Any], asyncio.Future] | None = None
        while True:
            first = carry or await queue.get()
            carry = None
            requests, count = [first], len(first[0])
            deadline = loop.time() + self.max_wait_s
            expected = min(self.max_batch, self.last_items)  # wait for about as many items as the last batch had
            while count < self.max_batch:
                if count >= expected and queue.empty():
                    break  # no sign of more load: do not make this batch wait
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        request = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if count + len(request[0]) > self.max_batch:
                    carry = request  # starts the next batch: a request is never split
                    break
                requests.append(request)
                count += len(request[0])
            requests = [r for r in requests if not r[1].cancelled()]  # clients gone before their batch ran
            if not requests:
                continue
            items = [item for r in requests for item in r[0]]
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as exc:  # noqa: BLE001 - handed to the requests, which report it
                for _, future in requests:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.last_items = len(items)
            if self.on_batch is not None:
                self.on_batch(len(items), len(requests))
            start = 0
            for request_items, future in requests:
                if not future.done():
                    future.set_result(list(results[start : start + len(request_items)]))
                start += len(request_items)
