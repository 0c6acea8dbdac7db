"""Personal data: which roles see reporters' phone and ID numbers, and how the others see them masked."""

from __future__ import annotations

import re
from typing import Any

# Roles with a need to call reporters back; everyone else sees masked numbers.
PERSONAL_DATA_ROLES = frozenset({"operator", "commander"})

_DIGITS = re.compile(r"\d")


def can_see_personal(user: Any) -> bool:
    """True for roles that need reporters' phone numbers in clear."""
    return getattr(user, "role", None) in PERSONAL_DATA_ROLES


def mask_phone(value: str) -> str:
    """138****1234 for an 11-digit mobile number; other numbers keep their first 3 and last 2 digits."""
    digits = "".join(_DIGITS.findall(value or ""))
    if not digits:
        return ""
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) <= 5:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"


def mask_id_number(value: str) -> str:
    """4403**********1234 for an 18-character resident ID number."""
    value = (value or "").strip()
    if len(value) < 8:
        return "*" * len(value)
    return f"{value[:4]}{'*' * (len(value) - 8)}{value[-4:]}"
