"""Type aliases for Blender's callback return values (fake-bpy-module checks them as literals)."""

from __future__ import annotations

from typing import Literal, TypeAlias

OperatorResult: TypeAlias = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
ReportLevel: TypeAlias = Literal["INFO", "WARNING", "ERROR"]
