"""Channel-layer group names; the server alone decides who joins which (clients never name a group)."""

from __future__ import annotations

# Every process subscribes once to this group and fans events out to its own sockets (realtime/hub.py).
FANOUT_GROUP = "realtime.fanout"
