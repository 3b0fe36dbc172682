"""The library's one configuration error format: which field, which value, what is allowed."""

from __future__ import annotations

from typing import Any, NoReturn


def fail(field: str, value: Any, allowed: str) -> NoReturn:
    """Raise ``ValueError("field=value is invalid: allowed")``."""
    raise ValueError(f"{field}={value!r} is invalid: {allowed}")
