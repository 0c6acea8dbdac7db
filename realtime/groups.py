"""Channel-layer group names; the server alone decides who joins which."""

from __future__ import annotations


def user_group(user_id: int) -> str:
    """The group of every socket of one user (a user's feed is delivered here)."""
    return f"user.{user_id}"


def control_group(user_id: int) -> str:
    """The group that receives control messages for one user's sockets (e.g. close on deactivation)."""
    return f"control.{user_id}"
