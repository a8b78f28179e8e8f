"""What several command groups share: ``--set KEY=VALUE`` config overrides."""

from __future__ import annotations

import json
from typing import Sequence


def set_values(items: Sequence[str] | None) -> dict:
    """``--set KEY=VALUE`` options as config overrides (a value is read as JSON where it is JSON)."""
    overrides = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
