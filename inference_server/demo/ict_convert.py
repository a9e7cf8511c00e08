"""Convert the ICT Face Model Light (USC ICT, MIT licence) into the DEMO head in the FLAME file layout.

Run once by a developer (the OBJs are not in this repository, only the converted package data)::

    git clone https://github.com/ICT-VGL/ICT-FaceKit          # or any copy of it
    python -m inference_server.demo.ict_convert ICT-FaceKit   # writes inference_server/assets/demo_head/

What is kept of the ICT mesh: the face, head and neck, the mouth socket (so an open jaw shows a dark
mouth, not the inside of the skull) and the two eyeballs; teeth, gums, eye sockets, lacrimal and eyelash
geometry are dropped. Units become metres. What goes where (see ``docs/flame.md``):

* ``shapedirs[:, :, :300]``: the first ``n_identity`` identity modes (ICT scales them to 1σ already),
  zero-padded to FLAME's 300 shape columns;
* ``shapedirs[:, :, 300:]``: the ARKit expression shapes re-expressed as orthogonal modes with a
  standard deviation (:mod:`.ict_expressions`), zero-padded to 100;
* the jaw joint, skin weights and the jaw's pose corrective fitted from ``jawOpen`` (:mod:`.ict_rig`);
* the 68 Multi-PIE landmark vertices of the ICT README as a landmark embedding, 1785 front-face vertices
  spread evenly over ICT's narrow face area, one UV atlas with disjoint charts (skin, two eyeballs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..flame.model_data import FlameModelData
from .ict_appearance import vertex_colors
from .ict_expressions import EXCLUDED_EXPRESSIONS, expression_modes
from .ict_obj import IctFormatError, ObjMesh, read_obj_mesh, read_obj_vertices
from .ict_rig import (
    PARENTS,
    JawFit,
    fit_rigid_rotation,
    jaw_corrective,
    jaw_weights,
    nonnegative_regressor,
    ring_centre,
    smoothstep,
    sphere_centre,
)

DEMO_VERSION = "DEMO-ICT"
#: Bump when the conversion changes; the cached FLAME-layout copies are rewritten.
CONVERTER_VERSION = "ict-1"
N_IDENTITY = 50
N_SHAPE, N_EXPRESSION, N_FRONT = 300, 100, 1785
CM = 0.01  # ICT's OBJs are in centimetres
#: Vertex ranges of the ICT topology (README "Face Model Topology"), end exclusive.
FACE_HEAD_MOUTH = range(0, 13294)  # face 0-9408, head and neck 9409-11247, mouth socket 11248-13293
FACE = range(0, 9409)
HEAD_NECK = range(9409, 11248)
MOUTH_SOCKET = range(11248, 13294)
NARROW_FACE = range(0, 6706)
LOWER_TEETH = range(19247, 21451)
EYEBALL_LEFT = range(21451, 23021)  # subject's left (x > 0)
EYEBALL_RIGHT = range(23021, 24591)
SCLERA_LEFT, SCLERA_RIGHT = range(21451, 22221), range(23021, 23791)
#: Multi-PIE / iBUG 68 landmarks as ICT vertex ids, from the ICT README ("Facial Landmarks").
LANDMARK_VERTICES = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081,
    0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)  # fmt: skip
NOSE_TIP_LANDMARK, CHIN_LANDMARK = 30, 8


@dataclass(frozen=True)
class IctSource:
    """The ICT repository on disk: ``FaceXModel/*.obj`` and ``vertex_indices.json``."""

    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "FaceXModel"

    def obj(self, name: str) -> Path:
        path = self.model_dir / f"{name}.obj"
        if not path.is_file():
            raise IctFormatError(f"{path} is missing: pass the root of an ICT-FaceKit checkout")
        return path

    def expression_names(self) -> list[str]:
        data = json.loads((self.model_dir / "vertex_indices.json").read_text(encoding="utf-8"))
        return [str(name) for name in data["expressions"]]


def kept_vertices() -> np.ndarray:
    """ICT vertex ids kept, in the DEMO head's order (face, head, neck, mouth socket, eyeballs)."""
    return np.concatenate([np.arange(13294), np.arange(21451, 24591)])


def _restricted_mesh(mesh: ObjMesh, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Faces whose corners are all kept, renumbered; texture coordinates of the used corners only."""
    new_id = np.full(len(mesh.vertices), -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    inside = (new_id[mesh.faces] >= 0).all(axis=1)
    faces = new_id[mesh.faces[inside]]
    used_uv, uv_faces = np.unique(mesh.uv_faces[inside], return_inverse=True)
    uv_faces = uv_faces.reshape(-1, 3).astype(np.int64)
    return faces, _atlas(mesh.uv[used_uv], faces, uv_faces, new_id), uv_faces, new_id


def _atlas(uv: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray, new_id: np.ndarray) -> np.ndarray:
    """One UV atlas: ICT gives each material its own [0, 1] tiles (skin in two tiles side by side, each
    eyeball the whole unit square), so they overlap. Skin goes to u in [0, 0.8], the eyeballs to two
    0.2-wide squares on the right."""
    uv = uv.copy()
    part = np.zeros(len(uv), dtype=np.int64)  # 0 skin, 1 left eyeball, 2 right eyeball
    for label, ids in ((1, EYEBALL_LEFT), (2, EYEBALL_RIGHT)):
        on_part = np.isin(faces[:, 0], new_id[np.arange(ids.start, ids.stop)])
        part[uv_faces[on_part].ravel()] = label
    skin = part == 0
    uv[skin, 0] *= 0.4  # u in [0, 2] -> [0, 0.8]
    for label, v0 in ((1, 0.78), (2, 0.56)):
        on = part == label
        uv[on] = np.clip(uv[on], 0.0, 1.0) * 0.2 + [0.8, v0]
    return uv


def landmark_embedding(faces: np.ndarray, vertex_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each landmark vertex as a corner of one of its triangles (barycentric weight 1 there)."""
    triangles, bary = [], []
    for vertex in vertex_ids:
        face = int(np.nonzero((faces == vertex).any(axis=1))[0][0])
        triangles.append(face)
        bary.append((faces[face] == vertex).astype(np.float64))
    return np.array(triangles, dtype=np.int64), np.array(bary)


def front_face_indices(vertices: np.ndarray, candidates: np.ndarray, start: int, count: int) -> np.ndarray:
    """``count`` candidates spread evenly over their surface (farthest-point sampling from ``start``)."""
    points = vertices[candidates]
    chosen = [int(np.nonzero(candidates == start)[0][0])]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
    return np.sort(candidates[chosen]).astype(np.int64)


def _rig(neutral: np.ndarray, jaw_open: np.ndarray, fit: JawFit, landmarks: np.ndarray, n_face_head: int,
         eyes: tuple[np.ndarray, np.ndarray], scleras: tuple[np.ndarray, np.ndarray],
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """J_regressor (5, V), weights (V, 5), posedirs (V, 3, 36) of the kept mesh (metres).

    The neck joint sits 1.5 cm below the chin, the root 3 cm above the neck's cut; the lower neck blends
    from the neck to the root between the two.
    """
    n = len(neutral)
    y = neutral[:, 1]
    head = np.arange(FACE.stop, HEAD_NECK.stop)
    neck_y = float(landmarks[CHIN_LANDMARK, 1]) - 0.015
    root_y = float(neutral[head, 1].min()) + 0.03
    regressor = np.zeros((5, n))
    regressor[0] = ring_centre(neutral, head, root_y, 0.006)
    regressor[1] = ring_centre(neutral, head, neck_y, 0.006)
    # The skin ring at the pivot's height surrounds it (the hinge lies inside the head).
    near_jaw = np.nonzero(np.abs(neutral[: HEAD_NECK.stop, 1] - fit.pivot[1]) < 0.01)[0]
    regressor[2, near_jaw] = nonnegative_regressor(neutral[near_jaw], fit.pivot)
    for row, (eye, sclera) in enumerate(zip(eyes, scleras, strict=True), start=3):
        centre, _ = sphere_centre(neutral[sclera])
        regressor[row, eye] = nonnegative_regressor(neutral[eye], centre)
    joints = regressor @ neutral

    root = smoothstep(y, neck_y, root_y)
    root[n_face_head:] = 0.0
    movable = np.zeros(n, dtype=bool)
    movable[:n_face_head] = y[:n_face_head] < landmarks[NOSE_TIP_LANDMARK, 1]
    jaw = jaw_weights(neutral, jaw_open, joints[2], fit, movable) * (1.0 - root)
    weights = np.zeros((n, 5))
    weights[:, 0], weights[:, 2] = root, jaw
    weights[:, 1] = 1.0 - root - jaw
    for column, eye in ((3, eyes[0]), (4, eyes[1])):
        weights[eye] = 0.0
        weights[eye, column] = 1.0
    posedirs = jaw_corrective(neutral, jaw_open, joints[2], fit, weights[:, 2])
    return regressor, weights, posedirs


def convert(source: IctSource, n_identity: int = N_IDENTITY) -> tuple[FlameModelData, dict[str, object]]:
    """The DEMO head and a provenance record (what was measured during the conversion)."""
    mesh = read_obj_mesh(source.obj("generic_neutral_mesh"))
    keep = kept_vertices()
    faces, uv, uv_faces, new_id = _restricted_mesh(mesh, keep)
    neutral = mesh.vertices[keep] * CM
    n_face_head = len(FACE_HEAD_MOUTH)
    eyes = (new_id[np.arange(*_span(EYEBALL_LEFT))], new_id[np.arange(*_span(EYEBALL_RIGHT))])
    scleras = (new_id[np.arange(*_span(SCLERA_LEFT))], new_id[np.arange(*_span(SCLERA_RIGHT))])

    shapedirs = np.zeros((len(keep), 3, N_SHAPE + N_EXPRESSION))
    for k in range(n_identity):
        shapedirs[:, :, k] = read_obj_vertices(source.obj(f"identity{k:03d}"))[keep] * CM - neutral
    names = [name for name in source.expression_names() if name != "jawOpen"]
    shapes = {name: read_obj_vertices(source.obj(name))[keep] * CM - neutral for name in names}
    for name in shapes:
        for eye in eyes:
            shapes[name][eye] = 0.0  # the eyeballs turn with the eye joints only
    modes, expression_info = expression_modes(shapes)
    shapedirs[:, :, N_SHAPE : N_SHAPE + modes.shape[2]] = modes

    jaw_open = read_obj_vertices(source.obj("jawOpen"))
    fit = fit_rigid_rotation(mesh.vertices[np.arange(*_span(LOWER_TEETH))] * CM,
                             jaw_open[np.arange(*_span(LOWER_TEETH))] * CM)  # fmt: skip
    jaw_open = jaw_open[keep] * CM
    for eye in eyes:
        jaw_open[eye] = neutral[eye]
    lmk_faces, lmk_bary = landmark_embedding(faces, new_id[np.array(LANDMARK_VERTICES)])
    landmarks = neutral[new_id[np.array(LANDMARK_VERTICES)]]
    regressor, weights, posedirs = _rig(neutral, jaw_open, fit, landmarks, n_face_head, eyes, scleras)
    front = front_face_indices(
        neutral, new_id[np.arange(*_span(NARROW_FACE))], int(new_id[LANDMARK_VERTICES[NOSE_TIP_LANDMARK]]), N_FRONT
    )
    data = FlameModelData(
        v_template=neutral, shapedirs=shapedirs, posedirs=posedirs, J_regressor=regressor,
        parents=PARENTS.copy(), weights=weights, faces=faces, n_shape=N_SHAPE, n_expression=N_EXPRESSION,
        uv=uv, uv_faces=uv_faces, lmk_faces_idx=lmk_faces, lmk_bary_coords=lmk_bary,
        front_face_indices=front, version=DEMO_VERSION, is_demo=True,
        extra={"vertex_colors": vertex_colors(neutral, landmarks, n_face_head, eyes, scleras)},
    )  # fmt: skip
    provenance: dict[str, object] = {
        "source": "ICT Face Model Light (ICT-VGL/ICT-FaceKit), MIT licence",
        "source_commit": _git_commit(source.root),
        "converter_version": CONVERTER_VERSION,
        "ict_vertex_ids": "0-13293 (face, head and neck, mouth socket), 21451-24590 (eyeballs)",
        "identity_modes": n_identity,
        "jaw_open_angle_deg": round(float(np.degrees(fit.angle)), 3),
        "jaw_pivot_m": np.round(fit.pivot, 5).tolist(),
        "jaw_rigid_fit_residual_mm": round(fit.residual * 1000.0, 4),
        "expressions": expression_info,
        "excluded_expressions": list(EXCLUDED_EXPRESSIONS),
    }
    return data, provenance


def _span(r: range) -> tuple[int, int]:
    return r.start, r.stop


def _git_commit(root: Path) -> str:
    for args in (["git", "-C", str(root), "rev-parse", "HEAD"], ["git", "--git-dir", str(root), "rev-parse", "HEAD"]):
        try:
            return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            continue
    return "unknown"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    from .packaged_head import PACKAGE_DIR, write_packaged_head

    parser = argparse.ArgumentParser(
        prog="python -m inference_server.demo.ict_convert", description=__doc__.split("\n")[0]
    )
    parser.add_argument("ict_root", type=Path, help="root of an ICT-FaceKit checkout (holds FaceXModel/)")
    parser.add_argument("-o", "--out", type=Path, default=PACKAGE_DIR, help="output folder (default: the package's)")
    parser.add_argument("--identity-modes", type=int, default=N_IDENTITY, help="identity modes kept (≤ 100)")
    args = parser.parse_args(argv)
    data, provenance = convert(IctSource(args.ict_root), args.identity_modes)
    for path in write_packaged_head(args.out, data, provenance):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
