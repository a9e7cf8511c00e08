"""Shape, expression and pose-corrective bases of the demo head (DEMO data, not FLAME).

Shape components are smooth fields that change proportions (size, width, face length, nose, jaw, ...),
first the designed ones, then random smooth polynomial fields; their size falls with the index. Expression
components are local: each is zero outside its region (mouth, brows, eyelids, cheeks). Eyeballs move
rigidly with the skin of their socket under shape changes and never move under expressions.
"""

from __future__ import annotations

import numpy as np

from .head_mesh import EYE_RADIUS, HeadMesh
from .head_rig import eye_region_weights, lower_face_fraction
from .smooth import bump2, exact_sum, row_norms, smooth_max, smoothstep, soft_sign

N_SHAPE = 300
N_EXPRESSION = 100
N_POSE = 36


def _scaled(field: np.ndarray, amplitude: float) -> np.ndarray:
    """``field`` rescaled so its largest vertex displacement is ``amplitude`` metres."""
    peak = float(np.max(row_norms(field)))
    return field * (amplitude / peak) if peak > 0 else field


def _vec(
    mesh: HeadMesh, dx: np.ndarray | float = 0.0, dy: np.ndarray | float = 0.0, dz: np.ndarray | float = 0.0
) -> np.ndarray:
    out = np.zeros_like(mesh.vertices)
    out[:, 0] = dx
    out[:, 1] = dy
    out[:, 2] = dz
    return out


def _skin_only(mesh: HeadMesh, field: np.ndarray) -> np.ndarray:
    field[mesh.n_skin :] = 0.0
    return field


def _eyes_follow_sockets(mesh: HeadMesh, field: np.ndarray) -> np.ndarray:
    """Give each eyeball the weighted mean displacement of the skin around its socket (a rigid move)."""
    for weights, eye in zip(eye_region_weights(mesh), mesh.eye_slices, strict=True):
        around = np.nonzero(weights)[0]
        w = weights[around]
        total = exact_sum(w)
        shift = [exact_sum(w * field[around, k]) / total for k in range(3)]
        field[eye] = shift
    return field


def _monomials(p: np.ndarray) -> list[np.ndarray]:
    """Monomials up to degree 3 of normalised coordinates (20 smooth scalar fields)."""
    x, y, z = p[:, 0] / 0.08, (p[:, 1] + 0.02) / 0.1, p[:, 2] / 0.1
    one = np.ones_like(x)
    first = [x, y, z]
    second = [x * x, y * y, z * z, x * y, x * z, y * z]
    third = [
        x * x * x,
        y * y * y,
        z * z * z,
        x * x * y,
        x * x * z,
        y * y * x,
        y * y * z,
        z * z * x,
        z * z * y,
        x * y * z,
    ]
    return [one, *first, *second, *third]


_MONOMIAL_DEGREE = np.array([0] + [1] * 3 + [2] * 6 + [3] * 10)


def _random_smooth_field(
    terms: list[np.ndarray], rng: np.random.Generator, degree_decay: float
) -> np.ndarray:
    """A random cubic polynomial vector field over :func:`_monomials` (uniform coefficients, higher
    degrees smaller)."""
    coefficients = 2.0 * rng.random((len(terms), 3)) - 1.0
    scale = 1.0 / (1.0 + degree_decay * _MONOMIAL_DEGREE)
    field = np.zeros((len(terms[0]), 3))
    for term, coefficient, s in zip(terms, coefficients, scale, strict=True):
        field += term[:, None] * (coefficient * s)[None, :]
    return field


def shape_amplitude(index: int) -> float:
    """Largest displacement (metres) of shape component ``index`` at one unit: 10.5 mm falling off.

    Generator version 1 used 3.5 mm: identities then differed by 2-3 px in the 112 px ArcFace crop, too
    faint for encoders trained from scratch on a few thousand renders to see (README, "Demo weights").
    """
    return 0.0105 / (1.0 + index / 8.0)


def expression_amplitude(index: int) -> float:
    return 0.003 / (1.0 + index / 10.0)


def shape_basis(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 300): designed proportion changes first, then random smooth fields."""
    p = mesh.vertices
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    d = mesh.directions
    f = mesh.features
    front = smoothstep(mesh.base[:, 2], 0.015, 0.055)
    my = mesh.mouth_y
    lower_stretch = -smooth_max(0.03 - y, np.zeros_like(y), 0.03)
    lower_stretch = smooth_max(lower_stretch, np.full_like(y, -0.11), 0.03)
    jaw_band = smoothstep(y, 0.0, -0.06) * smoothstep(y, -0.15, -0.09)
    designed = [
        _vec(mesh, x, y + 0.02, z),  # overall size
        _vec(mesh, dx=x),  # head width
        _vec(mesh, dy=lower_stretch),  # face length
        _vec(mesh, dz=z),  # head depth
        _vec(mesh, dx=x * jaw_band),  # jaw width
        f["nose"][:, None] * d,  # nose size
        f["cheeks"][:, None] * d,  # cheek fullness
        f["chin"][:, None] * d + _vec(mesh, dz=bump2(x, y + 0.07, 0.03, 0.025) * front * 0.004),  # chin
        f["brows"][:, None] * d,  # brow ridge
        f["lips"][:, None] * d,  # lip fullness
        f["ears"][:, None] * d,  # ears
        _vec(
            mesh, dx=soft_sign(x, 0.015) * bump2(np.abs(x) - 0.031, y - 0.03, 0.04, 0.03) * front
        ),  # eye spacing
        _vec(mesh, dz=smoothstep(y, 0.04, 0.11) * smoothstep(z, -0.03, 0.03)),  # forehead slope
        _vec(mesh, dy=smoothstep(y, 0.0, 0.12) * y),  # cranium height
        _vec(mesh, dx=x * bump2(x, y + 0.012, 0.03, 0.03) * front),  # nose width
        _vec(mesh, dx=x * bump2(x, y - my, 0.04, 0.02) * front),  # mouth width
    ]
    terms = _monomials(p)
    basis = np.zeros((len(p), 3, N_SHAPE))
    for k in range(N_SHAPE):
        if k < len(designed):
            field = designed[k]
        else:
            field = _random_smooth_field(terms, rng, degree_decay=1.0)
            if k % 2 == 1:  # every other one concentrates on a random part of the face
                cx, cy = 0.06 * (2.0 * rng.random() - 1.0), -0.09 + 0.17 * rng.random()
                field = field * (bump2(x - cx, y - cy, 0.05, 0.05) * smoothstep(z, -0.02, 0.03))[:, None]
        field = _eyes_follow_sockets(mesh, _skin_only(mesh, field.copy()))
        basis[:, :, k] = _scaled(field, shape_amplitude(k))
    return basis


def _lid_closure(mesh: HeadMesh, side: int) -> np.ndarray:
    """Skin over one eye moved forward onto a lid that covers the eyeball (coefficient 1 ≈ closed)."""
    centre = mesh.eye_centres[side]
    p = mesh.vertices
    dx, dy = p[:, 0] - centre[0], p[:, 1] - centre[1]
    lid_radius = EYE_RADIUS + 0.0012
    under = np.maximum(lid_radius * lid_radius - dx * dx - dy * dy, 0.0)
    lid_z = centre[2] + np.sqrt(under)
    q = (dx / 0.0185) * (dx / 0.0185) + (dy / 0.0105) * (dy / 0.0105)
    region = smoothstep(q, 1.0, 0.6) * smoothstep(mesh.base[:, 2], 0.015, 0.055)
    forward = np.maximum(lid_z - p[:, 2], 0.0) * region
    return _skin_only(mesh, _vec(mesh, dy=-0.08 * forward, dz=forward))


def expression_basis(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 100): local movements of the mouth, brows, eyelids and cheeks."""
    p = mesh.vertices
    x, y = p[:, 0], p[:, 1]
    ax = np.abs(x)
    front = smoothstep(mesh.base[:, 2], 0.015, 0.055)
    wide_front = smoothstep(mesh.base[:, 2], -0.02, 0.035)
    my = mesh.mouth_y
    lip_side = 1.0 - 2.0 * lower_face_fraction(mesh)  # +1 upper lip, -1 lower lip

    mouth_region = bump2(x, y - my, 0.05, 0.032) * front
    corners = bump2(ax - 0.024, y - my, 0.02, 0.018) * front
    lips = bump2(x, y - my, 0.034, 0.02) * front
    brow = bump2(ax - 0.028, y - 0.052, 0.04, 0.028) * front
    inner_brow = bump2(ax - 0.012, y - 0.047, 0.025, 0.02) * front
    cheek = bump2(ax - 0.04, y - (my + 0.012), 0.025, 0.024) * wide_front
    lower_lids = bump2(ax - 0.031, y - 0.022, 0.02, 0.009) * front
    left, right = x > 0, x < 0

    smile = _vec(mesh, 0.4 * soft_sign(x, 0.01) * corners, 0.8 * corners + 0.2 * cheek, -0.35 * corners)
    blink = _lid_closure(mesh, 0) + _lid_closure(mesh, 1)
    designed = [
        (smile, 0.006),
        (_vec(mesh, dy=lip_side * lips), 0.004),  # lips apart
        (_vec(mesh, -0.5 * soft_sign(x, 0.01) * lips, 0.0, lips), 0.005),  # pucker
        (_vec(mesh, dy=brow), 0.006),  # brow raise
        (_vec(mesh, -0.6 * soft_sign(x, 0.005) * inner_brow, -inner_brow, 0.0), 0.005),  # frown
        (blink, None),  # both eyes closed at 1
        (_vec(mesh, dy=lower_lids, dz=0.3 * lower_lids) + 0.35 * blink, 0.0035),  # squint
        (cheek[:, None] * mesh.directions, 0.005),  # cheek puff
        (_vec(mesh, dx=mouth_region), 0.004),  # mouth sideways
        (_vec(mesh, dy=-corners, dz=-0.2 * corners), 0.004),  # mouth corners down
        (blink * left[:, None], None),  # left eye closed
        (blink * right[:, None], None),  # right eye closed
        (_vec(mesh, dy=brow * left), 0.006),  # left brow raise
        (_vec(mesh, dy=brow * right), 0.006),  # right brow raise
        (_vec(mesh, dy=np.maximum(lip_side, 0.0) * bump2(x, y - my - 0.006, 0.03, 0.012) * front), 0.003),
        (_vec(mesh, dy=-np.maximum(-lip_side, 0.0) * bump2(x, y - my + 0.008, 0.028, 0.014) * front), 0.003),
    ]
    regions = [mouth_region, brow, bump2(ax - 0.031, y - 0.03, 0.02, 0.013) * front, cheek]
    terms = _monomials(p)
    basis = np.zeros((len(p), 3, N_EXPRESSION))
    for k in range(N_EXPRESSION):
        if k < len(designed):
            field, amplitude = designed[k]
        else:
            region = regions[k % len(regions)]
            field = _random_smooth_field(terms, rng, degree_decay=0.5) * region[:, None]
            amplitude = expression_amplitude(k)
        field = _skin_only(mesh, field.copy())
        basis[:, :, k] = field if amplitude is None else _scaled(field, amplitude)
    return basis


def pose_correctives(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 36): small smooth corrections for neck and jaw rotations (eye rotations need none)."""
    p = mesh.vertices
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    neck_region = bump2(x, y + 0.085, 0.09, 0.05)
    jaw_region = bump2(x, y + 0.075, 0.06, 0.035) * smoothstep(z, -0.02, 0.03)
    terms = _monomials(p)
    posedirs = np.zeros((len(p), 3, N_POSE))
    for column in range(18):
        region = neck_region if column < 9 else jaw_region
        field = _skin_only(mesh, _random_smooth_field(terms, rng, degree_decay=1.0) * region[:, None])
        posedirs[:, :, column] = _scaled(field, 0.0015 if column < 9 else 0.002)
    return posedirs
