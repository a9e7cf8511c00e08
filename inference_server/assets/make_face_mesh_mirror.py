"""Make ``face_mesh_mirror.json``: which face mesh point is each point's mirror image.

MediaPipe's face mesh numbers anatomical points; on a mirrored photo it finds the same face with every
label naming the other side (the left eye's corner where the right eye's is). To use such a run as the
photo's own landmarks, each label must be swapped for its mirror partner. The mesh's topology is mirror
symmetric but the wheel ships no table of pairs, so it is measured: the face mesh runs on renders of
random DEMO heads and on their mirror images; the mirrored run's point *j*, mapped back to the photo, lies
where the direct run's point *perm[j]* does. The assignment minimising the summed distance over all renders
(Hungarian) is the table. It is checked against the mesh's own triangulation in
``tests/inference_server/preprocess/test_mesh_mirror.py`` (every edge maps onto an edge, except quads the
triangulation splits along the other diagonal on the other side).

    .venv/bin/python -m inference_server.assets.make_face_mesh_mirror

(needs SciPy, a dev dependency; ~1 minute on 2 cores.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().with_name("face_mesh_mirror.json")
RENDERS = 40
SEED = 50000
#: Large renders (the face ~250 px wide): neighbouring mesh points lie a few pixels apart.
SIZE = (1280, 960)


def measured_mirror(renders: int = RENDERS) -> tuple[np.ndarray, float]:
    """The mirror table (478,) and the median distance of matched points (eye distances)."""
    import torch
    from scipy.optimize import linear_sum_assignment

    from ..demo.head import generate_demo_head
    from ..fit.synthetic import ground_truth_texture, render_case
    from ..flame.layer import FlameLayer
    from ..preprocess.mediapipe_faces import MESH_IRIS_LEFT, MESH_IRIS_RIGHT, MediaPipeFaces

    head = generate_demo_head()
    layer, texture, faces = FlameLayer(head, dtype=torch.float64), ground_truth_texture(head), MediaPipeFaces()
    cost, n = np.zeros((478, 478)), 0
    for seed in range(SEED, SEED + renders):
        case = render_case(head, layer, texture, np.random.default_rng(seed), size=SIZE, max_yaw=20.0)
        direct = faces.face_mesh(case.image)
        mirrored = faces.face_mesh(np.ascontiguousarray(case.image[:, ::-1]))
        if not direct or not mirrored:
            continue
        a = np.asarray(direct[0], np.float64)[:, :2]
        b = np.asarray(mirrored[0], np.float64)[:, :2]
        b[:, 0] = case.image.shape[1] - b[:, 0]
        iod = float(np.linalg.norm(a[MESH_IRIS_RIGHT] - a[MESH_IRIS_LEFT]))
        cost += np.linalg.norm(b[:, None] - a[None], axis=2) / iod
        n += 1
    cost /= max(n, 1)
    rows, cols = linear_sum_assignment(cost)
    table = cols[np.argsort(rows)]
    return table, float(np.median(cost[np.arange(478), table]))


def make_face_mesh_mirror(output: Path = OUTPUT) -> Path:
    table, miss = measured_mirror()
    note = (f"MediaPipe face mesh (478 points, the refined network; the plain network's 468 are its first 468): "
            f"entry i is the point that is i's mirror image. Measured by make_face_mesh_mirror.py on {RENDERS} "
            f"renders of random DEMO heads and their mirror images (median matched distance {miss:.4f} eye "
            f"distances).")  # fmt: skip
    mirror = json.dumps([int(i) for i in table])
    output.write_text(f'{{\n "note": {json.dumps(note)},\n "mirror": {mirror}\n}}\n')
    return output


if __name__ == "__main__":
    print(make_face_mesh_mirror())
