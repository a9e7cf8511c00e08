"""Surface of the demo head (DEMO data, not FLAME): a latitude/longitude sphere deformed into a head.

The skin is one closed grid (rows of constant latitude, columns of constant azimuth, a vertex at each
pole) pushed out along rays from a point inside the head: a smooth union of a cranium ellipsoid, a lower
face ellipsoid and a neck cylinder, plus compact smooth bumps and dents for nose, brows, eye sockets,
cheekbones, lips, chin and ears. One grid row is the lip line: around it the rows are dense and pushed
back into the head, so the lips meet in a slit that the jaw can open. Two UV spheres are the eyeballs.
Axes and units follow FLAME: metres, y up, z out of the face, x towards the head's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .smooth import bump, bump2, half_angle_unit, smooth_max, smooth_min, smoothstep, tan_half_unit

#: The point every skin ray starts from (inside the head, between the ears).
RAY_ORIGIN = np.array([0.0, 0.01, 0.0])
N_ROWS = 58
N_COLS = 80
EYE_ROWS = 10
EYE_COLS = 16
EYE_RADIUS = 0.0124
#: Eye centres in x, y (left eye at +x); z follows from the skin.
EYE_XY = ((0.031, 0.030), (-0.031, 0.030))
MOUTH_Y = -0.045  # height of the lip line at the front
MOUTH_HALF_WIDTH = 0.026
JAW_JOINT = (0.0, -0.005, 0.0)
#: How far each row near the lip line is pushed back (index: |row - lip row|) and pulled to the line.
LIP_DEPTH = (0.011, 0.007, 0.0)
LIP_GAP = (0.0, 0.0004, 0.0007)

SKIN_COLOR = (0.87, 0.72, 0.62)
LIP_COLOR = (0.76, 0.42, 0.42)
MOUTH_COLOR = (0.30, 0.07, 0.08)
BROW_COLOR = (0.40, 0.28, 0.20)
SCLERA_COLOR = (0.96, 0.96, 0.94)
IRIS_COLOR = (0.32, 0.48, 0.62)
PUPIL_COLOR = (0.06, 0.06, 0.08)


@dataclass
class HeadMesh:
    """The template surface plus what the rig and the bases need to know about each vertex."""

    vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    uv: np.ndarray  # (T, 2)
    uv_faces: np.ndarray  # (F, 3)
    colors: np.ndarray  # (V, 3) RGB in [0, 1]
    n_skin: int  # skin vertices come first, then the left and the right eyeball
    eye_slices: tuple[slice, slice]
    eye_centres: np.ndarray  # (2, 3), left then right
    directions: np.ndarray  # (V, 3) skin ray directions (eyeballs: from the eye centre)
    base: np.ndarray  # (V, 3) skin points before the facial features (eyeballs: their centre)
    lip_offset: np.ndarray  # (V,) grid row minus the lip row (large for poles and eyeballs)
    lip_line_y: np.ndarray  # (V,) height of the lip row in the vertex's column
    mouth_mask: np.ndarray  # (V,) 1 in the middle of the mouth, 0 beyond the corners and off the face
    mouth_y: float
    features: dict[str, np.ndarray] = field(default_factory=dict)  # radial offset fields (V,)


def _ray_ellipsoid_exit(d: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]) -> np.ndarray:
    o = RAY_ORIGIN - np.asarray(centre)
    ax = np.asarray(axes)
    dd = d / ax
    oo = o / ax
    a = dd[:, 0] * dd[:, 0] + dd[:, 1] * dd[:, 1] + dd[:, 2] * dd[:, 2]
    b = 2.0 * (oo[0] * dd[:, 0] + oo[1] * dd[:, 1] + oo[2] * dd[:, 2])
    c = oo[0] * oo[0] + oo[1] * oo[1] + oo[2] * oo[2] - 1.0
    return (-b + np.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)


def _ray_neck_exit(d: np.ndarray) -> np.ndarray:
    """Exit distance from an elliptic neck cylinder with a rounded flat bottom (its top is hidden)."""
    rx, rz, axis_z, bottom, top = 0.052, 0.049, -0.02, -0.165, -0.02
    ox, oz = RAY_ORIGIN[0], RAY_ORIGIN[2] - axis_z
    a = (d[:, 0] / rx) * (d[:, 0] / rx) + (d[:, 2] / rz) * (d[:, 2] / rz)
    b = 2.0 * (ox * d[:, 0] / (rx * rx) + oz * d[:, 2] / (rz * rz))
    c = (ox / rx) * (ox / rx) + (oz / rz) * (oz / rz) - 1.0
    safe_a = np.maximum(a, 1e-12)
    side = np.where(a > 1e-12, (-b + np.sqrt(b * b - 4.0 * safe_a * c)) / (2.0 * safe_a), 1.0)
    dy = d[:, 1]
    down = np.where(dy < -1e-12, (RAY_ORIGIN[1] - bottom) / np.maximum(-dy, 1e-12), 1.0)
    up = np.where(dy > 1e-12, (top - RAY_ORIGIN[1]) / np.maximum(dy, 1e-12), 1.0)
    return np.minimum(smooth_min(np.minimum(side, 1.0), np.minimum(down, 1.0), 0.035), up)


def base_distance(d: np.ndarray) -> np.ndarray:
    """Distance along each unit ray to the featureless head-and-neck surface."""
    cranium = _ray_ellipsoid_exit(d, (0.0, 0.025, -0.012), (0.073, 0.097, 0.1))
    face = _ray_ellipsoid_exit(d, (0.0, -0.024, 0.004), (0.066, 0.062, 0.082))
    head = smooth_max(cranium, face, 0.02)
    return smooth_max(head, _ray_neck_exit(d), 0.03)


def feature_fields(p: np.ndarray, mouth_y: float) -> dict[str, np.ndarray]:
    """Radial offsets (metres) of each facial feature at featureless surface points ``p`` (N, 3)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    front = smoothstep(z, 0.015, 0.055)
    wide_front = smoothstep(z, -0.02, 0.035)

    bridge_top, tip, base = 0.034, -0.010, -0.022
    along = np.clip((bridge_top - y) / (bridge_top - tip), 0.0, 1.0)
    height = 0.003 + 0.021 * along * np.sqrt(along)
    width = 0.0075 + 0.0055 * along
    nose = height * bump(x / width) * smoothstep(y, bridge_top + 0.01, bridge_top - 0.004)
    nose = nose * smoothstep(y, base, tip + 0.002) * front
    nose = nose + 0.0065 * bump2(ax - 0.0135, y + 0.017, 0.0085, 0.007) * front

    eye_dx = ax - EYE_XY[0][0]
    eye_dy = y - EYE_XY[0][1]
    sockets = -0.0115 * bump2(eye_dx, eye_dy + 0.0005 * eye_dx / 0.016, 0.0185, 0.0105) * front
    brows = 0.0045 * bump2(eye_dx + 0.002, y - 0.049, 0.026, 0.011) * front
    brows = brows + 0.002 * bump2(x, y - 0.045, 0.012, 0.01) * front
    cheekbones = 0.006 * bump2(ax - 0.045, y - 0.003, 0.024, 0.02) * wide_front
    temples = -0.003 * bump2(ax - 0.062, y - 0.045, 0.02, 0.025) * wide_front
    cheeks = bump2(ax - 0.043, y + 0.022, 0.026, 0.026) * wide_front  # zero in the template
    upper_lip = 0.0045 * bump2(x, y - (mouth_y + 0.0045), 0.027, 0.0065) * front
    lower_lip = 0.005 * bump2(x, y - (mouth_y - 0.0065), 0.023, 0.0075) * front
    lip_dent = -0.0025 * bump2(x, y - (mouth_y - 0.018), 0.02, 0.006) * front
    chin = 0.008 * bump2(x, y + 0.071, 0.022, 0.016) * front
    side = smoothstep(ax, 0.045, 0.066)
    ears = 0.013 * bump2(y - 0.010, z + 0.012, 0.03, 0.017) * side
    ears = ears - 0.004 * bump2(y - 0.006, z + 0.014, 0.012, 0.008) * side
    return {
        "nose": nose,
        "sockets": sockets,
        "brows": brows,
        "cheekbones": cheekbones,
        "temples": temples,
        "cheeks": cheeks,
        "lips": upper_lip + lower_lip + lip_dent,
        "chin": chin,
        "ears": ears,
    }


#: Features that shape the neutral template (``cheeks`` is only a direction for a shape component).
TEMPLATE_FEATURES = ("nose", "sockets", "brows", "cheekbones", "temples", "lips", "chin", "ears")


def surface_points(d: np.ndarray, mouth_y: float, *, sockets: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Featured skin points along unit rays ``d`` (before the lip slit) and the featureless base points."""
    base = RAY_ORIGIN + base_distance(d)[:, None] * d
    fields = feature_fields(base, mouth_y)
    offset = np.zeros(len(d))
    for name in TEMPLATE_FEATURES:  # a fixed order, so the sum is the same everywhere
        if sockets or name != "sockets":
            offset = offset + fields[name]
    return base + offset[:, None] * d, base


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2])
    return v / n[:, None]


def skin_point_at(xy: np.ndarray, mouth_y: float, *, sockets: bool = True) -> np.ndarray:
    """Front skin points whose x, y are ``xy`` (N, 2), found by a fixed number of ray refinements."""
    n = len(xy)
    z = np.full(n, 0.09)
    for _ in range(12):
        target = np.stack([xy[:, 0], xy[:, 1], z], axis=1)
        point, _ = surface_points(_unit(target - RAY_ORIGIN), mouth_y, sockets=sockets)
        # Re-aim the ray at the wanted x, y through the depth just found.
        z = point[:, 2]
    return point


def _row_parameters(v_lip: float) -> np.ndarray:
    """Row latitudes (as tan(φ/2)), dense over the face and very dense at the lip line, one row on it."""
    fine = np.linspace(-1.0, 1.0, 20001)
    density = 1.0 + 1.8 * bump((fine - (-0.1)) / 0.45) + 4.0 * bump((fine - v_lip) / 0.03)
    mass = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) * 0.5 * (fine[1] - fine[0]))])
    lip_mass = float(np.interp(v_lip, fine, mass))
    below = int(N_ROWS * lip_mass / mass[-1])
    above = N_ROWS - 1 - below
    lower = lip_mass * (np.arange(below) + 0.5) / (below + 0.5)
    upper = lip_mass + (mass[-1] - lip_mass) * np.arange(1, above + 1) / (above + 0.5)
    rows = np.interp(np.concatenate([lower, upper]), mass, fine)
    return np.concatenate([rows[:below], [v_lip], rows[below:]])


def _column_parameters() -> np.ndarray:
    """Column azimuths (as tan(θ/4)), denser at the front; column N_COLS/2 looks straight ahead."""
    k = (2.0 * np.arange(N_COLS) - N_COLS) / N_COLS
    return k * (0.5 + 0.5 * k * k)


def _lip_row_parameter() -> float:
    """The row latitude whose front skin point lies at ``MOUTH_Y`` (bisection; deterministic)."""
    lo, hi = -0.6, 0.0
    front_col = np.array([[0.0, 0.0, 1.0]])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        s, c = tan_half_unit(np.array([mid]))
        d = front_col * c[:, None] + np.array([[0.0, 1.0, 0.0]]) * s[:, None]
        y = surface_points(d, MOUTH_Y)[0][0, 1]
        lo, hi = (mid, hi) if y < MOUTH_Y else (lo, mid)
    return 0.5 * (lo + hi)


def _grid_faces(rows: int, cols: int, first: int, wrap_mirror: bool) -> list[np.ndarray]:
    """Triangles of a closed lat/long grid with a pole below row 0 and one above the last row."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    jn = (j + 1) % cols
    a = first + i * cols + j
    b = first + i * cols + jn
    c = first + (i + 1) * cols + jn
    d = first + (i + 1) * cols + j
    # Split quads along mirrored diagonals on the two halves so the mesh is left/right symmetric.
    left_half = (j >= cols // 2) if wrap_mirror else np.ones_like(j, dtype=bool)
    t1 = np.where(left_half[..., None], np.stack([a, b, c], -1), np.stack([a, b, d], -1))
    t2 = np.where(left_half[..., None], np.stack([a, c, d], -1), np.stack([b, c, d], -1))
    quads = np.stack([t1, t2], axis=2).reshape(-1, 3)
    bottom, top = first + rows * cols, first + rows * cols + 1
    jj = np.arange(cols)
    fan_bottom = np.stack([np.full(cols, bottom), first + (jj + 1) % cols, first + jj], -1)
    last = first + (rows - 1) * cols
    fan_top = np.stack([last + jj, last + (jj + 1) % cols, np.full(cols, top)], -1)
    return [quads, fan_bottom, fan_top]


def _grid_uv(
    rows: int, cols: int, first_uv: int, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """UVs of a lat/long grid (the seam column duplicated, one UV per pole triangle) in ``box``."""
    u0, v0, u1, v1 = box
    i, j = np.meshgrid(np.arange(rows), np.arange(cols + 1), indexing="ij")
    grid_uv = np.stack([u0 + (u1 - u0) * j / cols, v0 + (v1 - v0) * (i + 1) / (rows + 1)], -1).reshape(-1, 2)
    jj = np.arange(cols)
    pole_u = u0 + (u1 - u0) * (jj + 0.5) / cols
    bottom_uv = np.stack([pole_u, np.full(cols, v0)], -1)
    top_uv = np.stack([pole_u, np.full(cols, v1)], -1)
    uv = np.concatenate([grid_uv, bottom_uv, top_uv])
    w = cols + 1
    ii, jg = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")
    a = first_uv + ii * w + jg
    b = first_uv + ii * w + jg + 1
    c = first_uv + (ii + 1) * w + jg + 1
    d = first_uv + (ii + 1) * w + jg
    return uv, [a, b, c, d, first_uv + rows * w + jj, first_uv + rows * w + cols + jj]


def _uv_faces_like(uv_parts: list[np.ndarray], rows: int, cols: int, wrap_mirror: bool) -> np.ndarray:
    a, b, c, d, bottom, top = uv_parts
    j = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")[1]
    left_half = (j >= cols // 2) if wrap_mirror else np.ones_like(j, dtype=bool)
    t1 = np.where(left_half[..., None], np.stack([a, b, c], -1), np.stack([a, b, d], -1))
    t2 = np.where(left_half[..., None], np.stack([a, c, d], -1), np.stack([b, c, d], -1))
    quads = np.stack([t1, t2], axis=2).reshape(-1, 3)
    jj = np.arange(cols)
    first = a[0, 0]
    w = cols + 1
    fan_bottom = np.stack([bottom, first + jj + 1, first + jj], -1)
    fan_top = np.stack([first + (rows - 1) * w + jj, first + (rows - 1) * w + jj + 1, top], -1)
    return np.concatenate([quads, fan_bottom, fan_top])


def _sixteen_directions() -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of k·22.5° for k = -8..7 from square roots only, so the eyeball is exactly symmetric."""
    c1 = np.sqrt(2.0 + np.sqrt(2.0)) / 2.0  # cos 22.5°
    c2 = np.sqrt(2.0) / 2.0  # cos 45°
    c3 = np.sqrt(2.0 - np.sqrt(2.0)) / 2.0  # cos 67.5°
    cos_0_to_180 = np.array([1.0, c1, c2, c3, 0.0, -c3, -c2, -c1, -1.0])
    sin_0_to_180 = np.array([0.0, c3, c2, c1, 1.0, c1, c2, c3, 0.0])
    k = np.arange(-8, 8)
    return np.sign(k) * sin_0_to_180[np.abs(k)], cos_0_to_180[np.abs(k)]


def _eyeball(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, unit directions and colours of one eyeball (its pole looks along +z)."""
    t = (np.arange(EYE_ROWS) + 1.0) / (EYE_ROWS + 1.0)
    m = t * t  # tan(α/4): rows crowd towards the pupil
    s_pol, c_pol = half_angle_unit(m)
    s_az, c_az = _sixteen_directions()
    dirs = np.stack(
        [
            s_pol[:, None] * s_az[None, :],
            s_pol[:, None] * c_az[None, :],
            np.broadcast_to(c_pol[:, None], (EYE_ROWS, EYE_COLS)),
        ],
        -1,
    ).reshape(-1, 3)
    dirs = np.concatenate([dirs, [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]])
    verts = centre + EYE_RADIUS * dirs
    cos_front = dirs[:, 2]
    colors = np.where(
        (cos_front > 0.985)[:, None],
        PUPIL_COLOR,
        np.where((cos_front > 0.92)[:, None], IRIS_COLOR, SCLERA_COLOR),
    )
    return verts, dirs, colors


def build_head_mesh() -> HeadMesh:
    v_lip = _lip_row_parameter()
    row_v = _row_parameters(v_lip)
    lip_row = int(np.nonzero(row_v == v_lip)[0][0])
    s_lat, c_lat = tan_half_unit(row_v)
    s_az, c_az = half_angle_unit(_column_parameters())
    grid_dirs = np.stack(
        [
            c_lat[:, None] * s_az[None, :],
            np.broadcast_to(s_lat[:, None], (N_ROWS, N_COLS)),
            c_lat[:, None] * c_az[None, :],
        ],
        -1,
    ).reshape(-1, 3)
    dirs = np.concatenate([grid_dirs, [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    skin, base = surface_points(dirs, MOUTH_Y)
    features = feature_fields(base, MOUTH_Y)
    n_skin = len(skin)

    rows = np.concatenate([np.repeat(np.arange(N_ROWS), N_COLS), [-1000, 1000]])
    lip_offset = rows - lip_row
    cols = np.concatenate([np.tile(np.arange(N_COLS), N_ROWS), [0, 0]])
    lip_line_y = skin[lip_row * N_COLS + cols, 1]
    mouth_mask = bump(base[:, 0] / MOUTH_HALF_WIDTH) * smoothstep(base[:, 2], 0.03, 0.06)
    mouth_mask[n_skin - 2 :] = 0.0

    # The lip slit: rows next to the lip line go back into the head and close up towards the line.
    near = np.abs(lip_offset) < len(LIP_DEPTH)
    idx = np.clip(np.abs(lip_offset), 0, len(LIP_DEPTH) - 1)
    depth = np.where(near, np.asarray(LIP_DEPTH)[idx], 0.0) * mouth_mask
    gap = np.where(near, np.sign(lip_offset) * np.asarray(LIP_GAP)[idx], 0.0)
    s = skin[:, 1] - lip_line_y
    skin = skin.copy()
    skin[:, 2] -= depth
    skin[:, 1] += np.where(near, (gap - s) * mouth_mask, 0.0)

    # Eyeballs: their front sits just behind where the skin would be without the socket.
    eye_xy = np.asarray(EYE_XY)
    skin_at_eyes = skin_point_at(eye_xy, MOUTH_Y, sockets=False)
    eye_centres = np.stack([eye_xy[:, 0], eye_xy[:, 1], skin_at_eyes[:, 2] - EYE_RADIUS - 0.0025], -1)
    eye_parts = [_eyeball(c) for c in eye_centres]
    n_eye = len(eye_parts[0][0])

    vertices = np.concatenate([skin] + [p[0] for p in eye_parts])
    directions = np.concatenate([dirs] + [p[1] for p in eye_parts])
    base_all = np.concatenate([base] + [np.broadcast_to(c, (n_eye, 3)) for c in eye_centres])
    n_total = len(vertices)
    pad = n_total - n_skin
    lip_offset_all = np.concatenate([lip_offset, np.full(pad, 1000)])
    lip_line_all = np.concatenate([lip_line_y, np.zeros(pad)])
    mouth_all = np.concatenate([mouth_mask, np.zeros(pad)])
    features_all = {k: np.concatenate([v, np.zeros(pad)]) for k, v in features.items()}

    faces = _grid_faces(N_ROWS, N_COLS, 0, True)
    uv_skin, uv_parts = _grid_uv(N_ROWS, N_COLS, 0, (0.0, 0.0, 0.76, 1.0))
    uv_faces = [_uv_faces_like(uv_parts, N_ROWS, N_COLS, True)]
    uvs = [uv_skin]
    for e in range(2):
        first = n_skin + e * n_eye
        faces += _grid_faces(EYE_ROWS, EYE_COLS, first, False)
        box = (0.78, 0.02 + 0.5 * e, 0.99, 0.48 + 0.5 * e)
        uv_e, parts = _grid_uv(EYE_ROWS, EYE_COLS, sum(len(u) for u in uvs), box)
        uvs.append(uv_e)
        uv_faces.append(_uv_faces_like(parts, EYE_ROWS, EYE_COLS, False))

    colors = _skin_colors(base, lip_offset, mouth_mask)
    colors_all = np.concatenate([colors] + [p[2] for p in eye_parts])
    return HeadMesh(
        vertices=vertices,
        faces=np.concatenate(faces).astype(np.int64),
        uv=np.concatenate(uvs),
        uv_faces=np.concatenate(uv_faces).astype(np.int64),
        colors=colors_all,
        n_skin=n_skin,
        eye_slices=(slice(n_skin, n_skin + n_eye), slice(n_skin + n_eye, n_total)),
        eye_centres=eye_centres,
        directions=directions,
        base=base_all,
        lip_offset=lip_offset_all,
        lip_line_y=lip_line_all,
        mouth_mask=mouth_all,
        mouth_y=MOUTH_Y,
        features=features_all,
    )


def _skin_colors(base: np.ndarray, lip_offset: np.ndarray, mouth_mask: np.ndarray) -> np.ndarray:
    x, y, z = base[:, 0], base[:, 1], base[:, 2]
    front = smoothstep(z, 0.015, 0.055)
    lips = (
        np.maximum(
            bump2(x, y - (MOUTH_Y + 0.004), 0.026, 0.0058), bump2(x, y - (MOUTH_Y - 0.006), 0.023, 0.0068)
        )
        * front
    )
    lips = np.clip(lips * 2.5, 0.0, 1.0)
    inside = (np.abs(lip_offset) <= 1) * np.clip(mouth_mask * 3.0, 0.0, 1.0)
    brows = np.clip(bump2(np.abs(x) - EYE_XY[0][0] + 0.001, y - 0.050, 0.021, 0.0045) * front * 3.0, 0.0, 1.0)
    color = np.broadcast_to(np.asarray(SKIN_COLOR), base.shape).copy()
    color += lips[:, None] * (np.asarray(LIP_COLOR) - color)
    color += brows[:, None] * (np.asarray(BROW_COLOR) - color)
    color += inside[:, None] * (np.asarray(MOUTH_COLOR) - color)
    return color
