"""Deployments (and test runs, and their workers) sharing one Redis keep apart by CHANNEL_PREFIX."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from realtime.groups import FANOUT_GROUP
from tests.support.layers import fresh_layer


def test_a_fan_out_reaches_only_the_processes_of_its_own_prefix() -> None:
    layers: dict[str, Any] = settings.CHANNEL_LAYERS
    ours_prefix = layers["default"]["CONFIG"]["prefix"]
    assert ours_prefix != "asgi", "the suite runs under its own channel names, not the default"

    async def scenario() -> tuple[dict[str, Any], bool]:
        sender, ours, theirs = (
            fresh_layer(ours_prefix),
            fresh_layer(ours_prefix),
            fresh_layer(ours_prefix + "-other"),
        )
        ours_channel, theirs_channel = await ours.new_channel(), await theirs.new_channel()
        await ours.group_add(FANOUT_GROUP, ours_channel)
        await theirs.group_add(FANOUT_GROUP, theirs_channel)
        await asyncio.sleep(0.2)  # the subscriptions reach Redis
        await sender.group_send(FANOUT_GROUP, {"type": "fanout", "message": {"n": 1}, "seqs": []})
        received = await asyncio.wait_for(ours.receive(ours_channel), 5)
        try:
            await asyncio.wait_for(theirs.receive(theirs_channel), 1)
            leaked = True
        except TimeoutError:
            leaked = False
        for layer in (sender, ours, theirs):
            await layer.flush()
        return received, leaked

    received, leaked = asyncio.run(scenario())
    assert received["message"] == {"n": 1}
    assert not leaked, "a process under another CHANNEL_PREFIX received the fan-out"
