"""An on/off worker switch read from the environment per request, with one wording for its error."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import BadRequestError

__all__ = ["read_switch"]

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def read_switch(name: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """True / False for the usual spellings of on / off, None when unset or empty. Anything else is a
    ``BadRequestError`` naming the variable: a misspelt switch must not silently run the other way."""
    value = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if value == "":
        return None
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise BadRequestError(
        f"{name}={value!r} is not understood.", "Set it to 1 or 0, or unset it, and restart the worker."
    )
