"""A process's acknowledgements, written together: one statement and one trip per flush for all sockets.

Clients ack every event they receive. During a warning to 5,000 sockets that is 2,500 acks on each of two
daphne processes within a few hundred milliseconds, arriving while the same event loop is still sending the
warning to the others. Written one socket at a time, each ack cost a trip to the thread pool, a pooled
connection with its check, the ack's statement and the warning receipt's UPDATE. Here the sockets only
record their latest ack in the process's batcher; every ACK_FLUSH_S it writes what has gathered (the
highest seq per user, since acks are cumulative per feed) in one trip to the thread pool: one statement
for every head (`feeds.feed_ack_many`), then each ack hook once with every user's first-acknowledged
events.

An ack that could not be written (the database away) is kept and tried again at the next flush; an
acknowledgement that is lost anyway (the process killed within ACK_FLUSH_S) only means the events are sent
again on reconnect, which the protocol allows (clients de-duplicate by seq).
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from realtime import feeds
from realtime.hooks import ACK_HOOKS

log = logging.getLogger(__name__)

ACK_FLUSH_S = 0.2
RETRY_S = 1.0


def ack_and_notify(acks: dict[int, int]) -> None:
    """Move the acks forward, then run each ack hook on what was acknowledged for the first time.

    Each hook runs in its own transactions; one that fails is logged and the others still run.
    """
    first = feeds.feed_ack_many(acks)
    if not first:
        return
    for hook in ACK_HOOKS:
        try:
            hook(first)
        except Exception:
            log.exception("ack hook failed")


class AckBatcher:
    """The acks of one event loop's sockets, waiting for the next flush."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, user_id: int, seq: int) -> None:
        """Record a socket's cumulative ack; it is written within ACK_FLUSH_S."""
        self._own_loop()
        if seq > self.pending.get(user_id, -1):
            self.pending[user_id] = seq
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def waiting(self, user_id: int) -> bool:
        """Whether an ack of this user is still to be written."""
        return self.loop is asyncio.get_running_loop() and user_id in self.pending

    async def flush(self) -> None:
        """Write what is waiting now (a socket closing), without waiting for the next round."""
        self._own_loop()
        await self._write()

    def _own_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            # A new event loop (tests): the sockets of the old one and their flusher are gone.
            self.loop, self.pending, self.task = loop, {}, None

    async def _run(self) -> None:
        while self.pending:
            await asyncio.sleep(ACK_FLUSH_S)
            if not await self._write():
                await asyncio.sleep(RETRY_S)

    async def _write(self) -> bool:
        batch, self.pending = self.pending, {}
        if not batch:
            return True
        try:
            await database_sync_to_async(ack_and_notify, thread_sensitive=False)(batch)
        except Exception:
            log.exception("could not write %d acknowledgements; trying again", len(batch))
            for user_id, seq in batch.items():
                if seq > self.pending.get(user_id, -1):
                    self.pending[user_id] = seq
            return False
        return True


batcher = AckBatcher()
