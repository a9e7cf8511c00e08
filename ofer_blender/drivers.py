"""Drivers that make the Identity and Expression properties animatable.

Update callbacks do not run during playback or rendering, so a keyframed Identity/Expression would not
move the mesh. Drivers do: every shape key, the jaw bone and (when the fit has a pose per expression) the
photo camera read the head's ``ofer.identity`` / ``ofer.expression``. No driver runs Python code, so
they work with script auto-execution off and on render farms without the add-on:

* a shape key's value is the simple expression ``v == n`` (1 for the chosen hypothesis, else 0);
* a looked-up value (a jaw quaternion component, a camera coordinate) is the driver's own F-curve used as
  a table: the driver's input is the Expression number, keyframes at 0..M hold the values, constant
  interpolation picks one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ids

VARIABLE = "v"


def _variable(driver: Any, source: Any, prop: str) -> None:
    var = driver.variables.new()
    var.name = VARIABLE
    var.type = "SINGLE_PROP"
    target = var.targets[0]
    target.id_type = "OBJECT"
    target.id = source
    target.data_path = f"{ids.OBJECT_PROP}.{prop}"


def drive_switch(block: Any, source: Any, prop: str, number: int) -> None:
    """Shape key ``block`` is 1 when ``source.ofer.<prop>`` equals ``number``, else 0."""
    block.driver_remove("value")
    fcurve = block.driver_add("value")
    driver = fcurve.driver
    driver.type = "SCRIPTED"
    _variable(driver, source, prop)
    driver.expression = f"{VARIABLE} == {int(number)}"


def drive_table(owner: Any, data_path: str, index: int, source: Any, prop: str, values: np.ndarray) -> None:
    """``owner.<data_path>[index]`` = ``values[n]`` where n = ``source.ofer.<prop>`` (0..len(values) − 1)."""
    owner.driver_remove(data_path, index)
    fcurve = owner.driver_add(data_path, index)
    driver = fcurve.driver
    driver.type = "AVERAGE"  # the one variable, unchanged: the table's input
    _variable(driver, source, prop)
    for modifier in list(fcurve.modifiers):  # a new driver curve carries a generator; a table must not
        fcurve.modifiers.remove(modifier)
    points = fcurve.keyframe_points
    for point in reversed(list(points)):  # Blender 5.0's new driver curve already holds points
        points.remove(point, fast=True)
    points.add(len(values))
    # One point at a time: foreach_set on a driver curve's points fails in Blender 5.0 ("internal error").
    for number, (point, value) in enumerate(zip(points, np.asarray(values, dtype=np.float64), strict=True)):
        point.co = (float(number), float(value))
        point.interpolation = "CONSTANT"
    fcurve.extrapolation = "CONSTANT"
    fcurve.update()
