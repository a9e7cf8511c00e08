"""read_switch: the on/off spellings, unset, and a misspelt value as a request error naming the variable."""

from __future__ import annotations

import pytest

from inference_server.env_switch import read_switch
from inference_server.errors import BadRequestError


def test_spellings_of_on_and_off_and_unset() -> None:
    assert [read_switch("X", {"X": v}) for v in ("1", " TRUE ", "yes", "On")] == [True] * 4
    assert [read_switch("X", {"X": v}) for v in ("0", "false", "No", " off")] == [False] * 4
    assert read_switch("X", {}) is None and read_switch("X", {"X": "  "}) is None


def test_a_misspelt_value_names_the_variable() -> None:
    with pytest.raises(BadRequestError, match="OFER_SOMETHING='maybe'"):
        read_switch("OFER_SOMETHING", {"OFER_SOMETHING": "maybe"})
