"""The NoW protocol: align a predicted mesh to a scan, then measure scan-to-mesh distances (mm).

1. Similarity (rotation, translation, scale) fitted on the 7 landmarks: FLAME 68-point indices 36, 39,
   42, 45 (eye corners), 33 (nose), 48, 54 (mouth corners), in that order (Umeyama least squares).
2. Rigid refinement, ICP-like (point-to-plane): repeat {closest point on the aligned mesh for every scan
   point; the rigid motion that best moves the mesh's tangent planes there onto the scan points} until
   the mean scan-to-mesh distance stops improving.
3. Report the median, mean and standard deviation of the scan points' distances to the mesh surface.

Closest points are exact point-to-triangle distances over candidate triangles: the ``candidates`` ones
whose bounding spheres come nearest to the scan point (torch, chunked; no scipy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: FLAME 68-point landmark indices NoW aligns on (eye corners, nose, mouth corners).
NOW_LANDMARKS_68 = (36, 39, 42, 45, 33, 48, 54)


@dataclass(frozen=True)
class Similarity:
    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation


def fit_similarity_3d(source: np.ndarray, target: np.ndarray, *, with_scale: bool = True) -> Similarity:
    """Least-squares s, R, t with target ≈ s R source + t (Umeyama 1991); ``with_scale=False``: rigid."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need matching (K >= 3, 3) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / a.var(axis=0).sum()) if with_scale else 1.0
    return Similarity(scale, rotation, mu_d - scale * rotation @ mu_s)


def closest_points_on_triangles(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Closest point of each of P points on its own triangle: points (P, 3), triangles (P, 3, 3) → (P, 3).

    Ericson's region test (Real-Time Collision Detection, 5.1.5), vectorised.
    """
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = points - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = points - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    tiny = torch.finfo(points.dtype).tiny

    def safe(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return n / torch.where(d.abs() > tiny, d, torch.full_like(d, tiny))

    denom = va + vb + vc
    v, w = safe(vb, denom), safe(vc, denom)
    result = a + ab * v[:, None] + ac * w[:, None]  # inside the face
    # Edges (checked before vertices, which override them).
    edge_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    t_bc = safe(d4 - d3, (d4 - d3) + (d5 - d6))
    result = torch.where(edge_bc[:, None], b + (c - b) * t_bc[:, None], result)
    edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    result = torch.where(edge_ac[:, None], a + ac * safe(d2, d2 - d6)[:, None], result)
    edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    result = torch.where(edge_ab[:, None], a + ab * safe(d1, d1 - d3)[:, None], result)
    result = torch.where(((d6 >= 0) & (d5 <= d6))[:, None], c, result)
    result = torch.where(((d3 >= 0) & (d4 <= d3))[:, None], b, result)
    result = torch.where(((d1 <= 0) & (d2 <= 0))[:, None], a, result)
    return result


def scan_to_mesh(
    scan: np.ndarray, vertices: np.ndarray, faces: np.ndarray, *, candidates: int = 16, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (P,) of every scan point to the mesh surface, the closest surface points (P, 3) and the
    triangle (P,) each lies on."""
    pts = torch.as_tensor(np.asarray(scan), dtype=torch.float64)
    tri = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)[torch.as_tensor(np.asarray(faces))]
    centroids = tri.mean(dim=1)
    radii = (tri - centroids[:, None]).norm(dim=2).max(dim=1).values
    k = min(candidates, len(centroids))
    distances, closest, triangles = [], [], []
    for start in range(0, len(pts), chunk):
        p = pts[start : start + chunk]
        # Lower bound of the distance to each triangle: to its bounding sphere around the centroid.
        ids = (torch.cdist(p, centroids) - radii).topk(k, largest=False).indices  # (C, k)
        q = closest_points_on_triangles(p.repeat_interleave(k, dim=0), tri[ids.reshape(-1)]).view(len(p), k, 3)
        d = (q - p[:, None]).norm(dim=2)
        best = d.argmin(dim=1)
        distances.append(d.gather(1, best[:, None])[:, 0])
        closest.append(q[torch.arange(len(p)), best])
        triangles.append(ids.gather(1, best[:, None])[:, 0])
    return torch.cat(distances).numpy(), torch.cat(closest).numpy(), torch.cat(triangles).numpy()


def _rotation(omega: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(omega))
    if angle < 1e-15:
        return np.eye(3)
    k = omega / angle
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def point_to_plane_step(closest: np.ndarray, normals: np.ndarray, scan: np.ndarray) -> Similarity:
    """The rigid motion (small-angle Gauss-Newton step) that best moves the mesh's tangent planes at
    ``closest`` onto the scan points: minimises sum(((R q + t - s) . n)^2)."""
    a = np.concatenate([np.cross(closest, normals), normals], axis=1)  # (P, 6): d residual / d(omega, t)
    b = -((closest - scan) * normals).sum(axis=1)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    return Similarity(1.0, _rotation(x[:3]), x[3:])


@dataclass(frozen=True)
class NowResult:
    median: float
    mean: float
    std: float
    distances: np.ndarray
    aligned_vertices: np.ndarray


def now_distances(
    pred_vertices: np.ndarray,
    pred_faces: np.ndarray,
    pred_landmarks: np.ndarray,
    scan: np.ndarray,
    scan_landmarks: np.ndarray,
    *,
    iterations: int = 30,
    tolerance: float = 1e-6,
) -> NowResult:
    """The NoW metric: all inputs in mm; landmarks (7, 3) in :data:`NOW_LANDMARKS_68` order."""
    if np.asarray(pred_landmarks).shape != (7, 3) or np.asarray(scan_landmarks).shape != (7, 3):
        raise ValueError("NoW needs 7 landmarks (eye corners, nose, mouth corners) on both meshes, shape (7, 3)")
    initial = fit_similarity_3d(pred_landmarks, scan_landmarks)
    vertices = initial.apply(pred_vertices)
    scan = np.asarray(scan, np.float64)
    faces = np.asarray(pred_faces, np.int64)
    distances, closest, triangle = scan_to_mesh(scan, vertices, faces)
    previous = float(distances.mean())
    for _ in range(iterations):
        corners = vertices[faces[triangle]]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        moved = point_to_plane_step(closest, normals, scan).apply(vertices)
        new_distances, new_closest, new_triangle = scan_to_mesh(scan, moved, faces)
        current = float(new_distances.mean())
        if current > previous - tolerance:
            if current < previous:
                vertices, distances = moved, new_distances
            break
        vertices, distances, closest, triangle, previous = moved, new_distances, new_closest, new_triangle, current
    return NowResult(
        median=float(np.median(distances)), mean=float(distances.mean()), std=float(distances.std()),
        distances=distances, aligned_vertices=vertices,
    )  # fmt: skip


def read_points(path: str) -> np.ndarray:
    """Landmarks from ``.npy`` / ``.txt`` (K×3) or a MeshLab ``.pp`` file (NoW's scan landmarks)."""
    if path.endswith(".pp"):
        import xml.etree.ElementTree as ElementTree

        root = ElementTree.parse(path).getroot()
        return np.array([[float(p.get(k, "nan")) for k in ("x", "y", "z")] for p in root.iter("point")])
    if path.endswith(".npy"):
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    return np.loadtxt(path, dtype=np.float64).reshape(-1, 3)


def read_mesh(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles from a Wavefront ``.obj`` (v / f lines) or an ``.npz`` with vertices, faces."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["vertices"], np.float64), np.asarray(data["faces"], np.int64)
    vertices, faces = [], []
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                vertices.append([float(v) for v in parts[1:4]])
            elif parts[0] == "f":
                ids = [int(p.split("/")[0]) for p in parts[1:]]
                ids = [i - 1 if i > 0 else len(vertices) + i for i in ids]
                faces += [[ids[0], ids[j], ids[j + 1]] for j in range(1, len(ids) - 1)]
    return np.asarray(vertices, np.float64).reshape(-1, 3), np.asarray(faces, np.int64).reshape(-1, 3)
