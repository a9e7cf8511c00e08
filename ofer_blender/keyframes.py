"""Many keyframes at once on one channel, the same way on Blender 4.2 to 5.2.

``keyframe_insert`` makes the action (and, from 4.4, its slot and channel bag) the way each version
wants; the rest of the points then go in with one ``foreach_set``, not one call per frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fcurves(id_data: Any) -> Any:
    """The F-curves animating ``id_data``: its slot's channel bag (4.4+; an action may hold several IDs'
    curves, and the legacy ``action.fcurves`` shows only the first slot's) or the action's own (4.2)."""
    animation = id_data.animation_data
    action = animation.action
    slot = getattr(animation, "action_slot", None)
    if slot is not None:
        from bpy_extras import anim_utils

        bag = anim_utils.action_get_channelbag_for_slot(action, slot)  # type: ignore[attr-defined]  # 4.4+
        if bag is not None:
            return bag.fcurves
    return action.fcurves


def set_keys(owner: Any, data_path: str, index: int, frames: np.ndarray, values: np.ndarray) -> Any:
    """Keyframe ``owner.<data_path>[index]`` (index −1: a scalar) at ``frames`` with ``values``; returns
    the F-curve. Keys are linear: between frames the value moves straight to the next one."""
    frames = np.asarray(frames, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    target = getattr(owner, data_path)
    if index < 0:
        setattr(owner, data_path, float(values[0]))
    else:
        target[index] = float(values[0])
    owner.keyframe_insert(data_path, index=index, frame=float(frames[0]))
    id_data = owner.id_data
    full_path = owner.path_from_id(data_path)
    fcurve = fcurves(id_data).find(full_path, index=max(index, 0))
    points = fcurve.keyframe_points
    points.add(len(frames) - len(points))
    points.foreach_set("co", np.stack([frames, values], axis=1).astype(np.float32).ravel())
    for point in points:
        point.interpolation = "LINEAR"
    fcurve.update()
    return fcurve
