"""One model shared by many requests: the batcher that puts waiting requests' images through
the model together, on a worker thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio
import numpy as np

from stages.common.release.errors import Refused
from stages.common.release.released_model import Backend

log = logging.getLogger("serve")
MAX_WAITING = 64  # requests queued for the model before 503


class Batcher:
    """One model, many requests: waiting requests' images go through the model together (at
    most ``max_batch`` per pass, on one worker thread), and at most ``max_waiting`` wait."""

    def __init__(
        self,
        backend: Backend,
        max_batch: int,
        max_waiting: int = MAX_WAITING,
        on_batch: Callable[[int], None] = lambda images: None,
    ) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.on_batch = on_batch  # told each forward pass's number of images
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue(
            max_waiting
        )

    async def probabilities(self, images: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((images, future))
        except asyncio.QueueFull:
            raise Refused(503, "busy: too many requests waiting; retry shortly") from None
        return await future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0][0])
            while not self.queue.empty() and count < self.max_batch:
                jobs.append(self.queue.get_nowait())
                count += len(jobs[-1][0])
            stacked = np.concatenate([images for images, _ in jobs])
            self.on_batch(len(stacked))
            try:
                probabilities = await anyio.to_thread.run_sync(self.backend.probabilities, stacked)
            except Exception as error:  # the requests fail, the service stays up
                log.exception("inference failed")
                for _, future in jobs:
                    if not future.done():  # done: its client went away
                        future.set_exception(Refused(500, f"inference failed: {error}"))
                continue
            start = 0
            for images, future in jobs:
                if not future.done():
                    future.set_result(probabilities[start : start + len(images)])
                start += len(images)
