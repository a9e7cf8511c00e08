"""What the gaze should do to a head, in numpy, independently of the add-on: FLAME's linear blend skinning for
the eye joints. Shared by the photo and sequence gaze tests and the real-worker sequence test."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from inference_server.result import EYE_JOINTS


class Head(Protocol):
    """What these helpers read of a photo or sequence result."""

    joints: np.ndarray
    skin_weights: np.ndarray


def rodrigues(aa: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(aa))
    if angle == 0.0:
        return np.eye(3)
    k = aa / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def turned(vertices: np.ndarray, head: Head, eye_pose: np.ndarray) -> np.ndarray:
    """``vertices`` with FLAME's blend for the eye joints added: w_e (R_e − I)(v − j_e) per eye. The other
    joints' share is already in the vertices (root and neck at rest; the jaw shares no vertex with an eye)."""
    v = vertices.astype(np.float64)
    w = head.skin_weights.astype(np.float64)
    w = w / w.sum(axis=1, keepdims=True)
    out = v.copy()
    for joint, aa in zip(EYE_JOINTS, eye_pose.astype(np.float64), strict=True):
        offset = (v - head.joints[joint].astype(np.float64)) @ (rodrigues(aa) - np.eye(3)).T
        out += w[:, joint, None] * offset
    return out


def eye_weighted(head: Head) -> np.ndarray:
    return head.skin_weights[:, list(EYE_JOINTS)].sum(axis=1) > 0
