"""Smooth, platform-independent building blocks for the demo head generator.

Everything here uses only +, -, *, /, sqrt, comparisons and exact (``math.fsum``) sums. Those are
correctly rounded by IEEE 754, so the generated head is the same bytes on every machine; transcendental
functions (numpy's SIMD ``exp``/``sin`` differ between CPUs in the last bit) and BLAS products (whose
summation order depends on the library) are avoided on purpose.
"""

from __future__ import annotations

import math

import numpy as np


def bump(t: np.ndarray) -> np.ndarray:
    """(1 - t²)³ on |t| < 1 and exactly 0 outside: a C² bump with compact support."""
    q = t * t
    r = 1.0 - q
    return np.where(q < 1.0, r * r * r, 0.0)


def bump2(dx: np.ndarray, dy: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Elliptic :func:`bump` with radii ``rx``, ``ry`` (zero outside the ellipse)."""
    q = (dx / rx) * (dx / rx) + (dy / ry) * (dy / ry)
    r = 1.0 - q
    return np.where(q < 1.0, r * r * r, 0.0)


def smoothstep(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1`` (or the reverse when edge0 > edge1), C¹ cubic in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum: equals max(a, b) when |a - b| >= k, blends within k."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + h * h * k / 4.0


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smooth_max(-a, -b, k)


def soft_sign(x: np.ndarray, scale: float) -> np.ndarray:
    """x / sqrt(x² + s²): an odd, smooth step from -1 to 1 over about ±scale."""
    return x / np.sqrt(x * x + scale * scale)


def half_angle_unit(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin θ, cos θ) for θ = 4·atan(u), computed rationally (u in [-1, 1] covers the full circle)."""
    s_half = 2.0 * u / (1.0 + u * u)
    c_half = (1.0 - u * u) / (1.0 + u * u)
    return 2.0 * s_half * c_half, c_half * c_half - s_half * s_half


def tan_half_unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin φ, cos φ) for φ = 2·atan(v), computed rationally (v in (-1, 1) covers (-π/2, π/2))."""
    return 2.0 * v / (1.0 + v * v), (1.0 - v * v) / (1.0 + v * v)


def exact_sum(values: np.ndarray) -> float:
    """Correctly rounded sum, independent of summation order."""
    return math.fsum(np.asarray(values, dtype=np.float64).ravel().tolist())


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """Euclidean length of each row of an (N, 3) array, summed in a fixed order."""
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    return np.sqrt(x * x + y * y + z * z)


def solve_small(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting in Python floats (deterministic, tiny systems only)."""
    n = len(rhs)
    a = [[*list(row), rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-300:
            raise ValueError("singular system")
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for k in range(col, n + 1):
                a[r][k] -= factor * a[col][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (a[r][n] - math.fsum(a[r][k] * x[k] for k in range(r + 1, n))) / a[r][r]
    return x
