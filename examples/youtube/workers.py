"""Transcoding workers: take a job from the queue, make one rendition, report it.

Theory of operation. A worker long-polls the ``transcode`` queue; a job names a video and a
rendition. The worker reads the source through the S3 API, runs the (fake) transcoder, writes
the rendition, records it in the video's metadata and only then acks. A worker that dies
mid-job leaves the message in flight; after the visibility timeout another worker gets it
again, and since every step is idempotent (same bytes to the same key, a set union in the
metadata) doing a job twice is harmless. A job that fails ``JOB_RECEIVES_MAX`` times lands
in the dead-letter queue instead of looping forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from blocks.core.codec import unpack
from blocks.core.errors import BlocksError
from blocks.queue.api import Message
from examples.ports import ObjectStore
from examples.youtube.app import JOBS, YouTube, rendition_key, source_key
from examples.youtube.stack import BUCKET
from examples.youtube.transcode import rendition_named, transcode

__all__ = ["TranscodeWorker"]

POLL_WAIT_MS = 100
RETRY_DELAY_MS = 200
log = logging.getLogger(__name__)


@dataclass(slots=True)
class TranscodeWorker:
    """One worker; ``run(stop)`` loops until ``stop`` is set."""

    name: str
    app: YouTube
    done: int = 0
    failed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        s3 = (
            self.app.stack.open_objects()
        )  # this worker's own connection, used by one thread at a time
        try:
            while not stop.is_set():
                messages = await self.app.stack.queue.receive(JOBS, wait_ms=POLL_WAIT_MS)
                for message in messages:
                    await self._handle(message, s3)
        finally:
            s3.close()

    async def _handle(self, message: Message, s3: ObjectStore) -> None:
        queue = self.app.stack.queue
        try:
            job = unpack(message.body)
            video_id, name = int(job["video"]), str(job["rendition"])
            rendition = rendition_named(name)

            def work() -> None:
                source = s3.get_object(BUCKET, source_key(video_id))
                output = transcode(source, rendition)
                s3.put_object(BUCKET, rendition_key(video_id, name), output)

            await self.app.stack.blocking.run(work)
            await self.app.record_rendition(video_id, name)
        except (BlocksError, KeyError, TypeError, ValueError) as error:
            self.failed += 1
            log.warning("%s: job %s failed: %s", self.name, message.id, error)
            with contextlib.suppress(BlocksError):
                await queue.nack(JOBS, message.receipt, delay_ms=RETRY_DELAY_MS)
            return
        await queue.ack(JOBS, message.receipt)
        self.done += 1
