"""Channel layers built as the settings build them, for tests that act as another process."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string


def fresh_layer(prefix: str | None = None) -> Any:
    """A new instance of the configured channel layer (its own connections), under `prefix` if given."""
    config: dict[str, Any] = copy.deepcopy(settings.CHANNEL_LAYERS["default"])
    options = dict(config.get("CONFIG", {}))
    if prefix is not None:
        options["prefix"] = prefix
    return import_string(config["BACKEND"])(**options)
