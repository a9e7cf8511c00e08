"""``ofer-worker demo -o DIR``: make the demo assets, prove the FLAME round trip, render a preview sheet.

The assets are loaded back through the real FLAME loader from both the ``.pkl`` and the ``.npz``; the torch
FLAME layer must give the same meshes from both. ``DIR/demo_head.png`` shows the neutral head, the two
identity extremes, a smile (ICT's ARKit shapes through the expression modes) and the open jaw, each from
the front and in a three-quarter view.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WorkerError

#: Largest vertex difference (metres) allowed between the meshes from the .pkl and the .npz.
ROUND_TRIP_TOLERANCE = 1e-9
PREVIEW_NAME = "demo_head.png"


@dataclass(frozen=True)
class PreviewPose:
    label: str
    shape: dict[int, float]
    expression: dict[int, float]
    jaw_open: float = 0.0
    #: ARKit shape name → weight, turned into expression-mode coefficients by the head's
    #: ``arkit_to_expression`` matrix
    arkit: dict[str, float] = field(default_factory=dict)


#: What the preview sheet shows (shape/expression component index → coefficient).
PREVIEW_POSES = (
    PreviewPose("neutral", {}, {}),
    PreviewPose("identity +2", dict.fromkeys(range(4), 2.0), {}),
    PreviewPose("identity -2", dict.fromkeys(range(4), -2.0), {}),
    PreviewPose(
        "smile", {}, {}, arkit={"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "cheekSquint_L": 0.5, "cheekSquint_R": 0.5}
    ),
    PreviewPose("jaw 0.35 rad", {}, {}, jaw_open=0.35),
)


class RoundTripError(WorkerError):
    code = "internal"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate the DEMO head assets (not FLAME), check the FLAME round trip, render a preview",
        description=__doc__,
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for demo_head.png")
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo asset folder (default: user cache)")
    parser.add_argument("--size", type=int, default=320, help="pixel size of each rendered view")
    parser.set_defaults(run=run)


def preview_batch(
    n_shape: int, n_expression: int, arkit_names: list[str] | None = None, arkit_to_expression: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape (B, n_shape), expression (B, n_expression) and pose (B, 15) rows of :data:`PREVIEW_POSES`."""
    batch = len(PREVIEW_POSES)
    shape = np.zeros((batch, n_shape))
    expression = np.zeros((batch, n_expression))
    pose = np.zeros((batch, 15))
    for row, item in enumerate(PREVIEW_POSES):
        for index, value in item.shape.items():
            shape[row, index] = value
        for index, value in item.expression.items():
            expression[row, index] = value
        if item.arkit and arkit_names is not None and arkit_to_expression is not None:
            weights = np.array([item.arkit.get(name, 0.0) for name in arkit_names])
            modes = arkit_to_expression @ weights
            expression[row, : len(modes)] += modes
        pose[row, 6] = item.jaw_open  # jaw rotation about x opens the mouth
    return shape, expression, pose


def run(args: argparse.Namespace) -> int:
    import torch

    from ..flame.layer import FlameLayer
    from ..flame.loading import load_flame_model
    from ..render import Camera, grid, render_mesh, write_png
    from .assets import ensure_demo_assets
    from .head import load_demo_head

    try:
        paths = ensure_demo_assets(args.cache_dir)
        from_pkl = load_flame_model(
            paths.model_pkl,
            landmark_embedding=paths.landmark_embedding,
            front_face_indices=paths.front_face_indices,
        )
        from_npz = load_flame_model(paths.model_npz)
        if not (from_pkl.is_demo and from_npz.is_demo):
            raise RoundTripError(f"{paths.directory} holds a model not marked as demo data", "delete the folder")
        packaged = load_demo_head().extra
        shape, expression, pose = preview_batch(
            from_pkl.n_shape, from_pkl.n_expression, packaged["arkit_names"], packaged["arkit_to_expression"]
        )
        meshes = []
        for model in (from_pkl, from_npz):
            layer = FlameLayer(model, dtype=torch.float64)
            with torch.no_grad():
                out = layer(
                    shape=torch.from_numpy(shape),
                    expression=torch.from_numpy(expression),
                    pose=torch.from_numpy(pose),
                )
            meshes.append(out.vertices.numpy())
        difference = float(np.abs(meshes[0] - meshes[1]).max())
        if difference > ROUND_TRIP_TOLERANCE:
            raise RoundTripError(
                f"the .pkl and the .npz give different meshes (max {difference:.3g} m)",
                f"delete {paths.directory} so the demo assets are regenerated",
            )

        colors = np.load(paths.vertex_colors, allow_pickle=False)
        size = max(64, int(args.size))
        views = []
        labels = []
        for yaw, view in ((0.0, "front"), (35.0, "3/4")):
            for item, vertices in zip(PREVIEW_POSES, meshes[0], strict=True):
                camera = Camera(yaw_deg=yaw, center=(0.0, 0.0, 0.03), extent=0.32)
                views.append(
                    render_mesh(
                        vertices,
                        from_pkl.faces,
                        width=size,
                        height=size,
                        camera=camera,
                        colors=colors,
                        supersample=2,
                    )
                )
                labels.append(f"{item.label}, {view}")
        output = Path(args.output)
        preview = output / PREVIEW_NAME
        write_png(preview, grid(views, labels, columns=len(PREVIEW_POSES)))
    except WorkerError as exc:
        print(f"ofer-worker demo: {exc}", file=sys.stderr)
        return 1

    print("DEMO assets (not FLAME): the ICT Face Model Light (MIT) in the FLAME file layout")
    print(f"  model (.pkl):        {paths.model_pkl}")
    print(f"  model (.npz):        {paths.model_npz}")
    print(f"  landmark embedding:  {paths.landmark_embedding}")
    print(f"  front-face indices:  {paths.front_face_indices}")
    print(f"  README:              {paths.readme}")
    print(
        "FLAME round trip: .pkl and .npz load through the FLAME loader and give the same meshes "
        f"(max difference {difference:.1e} m; {from_pkl.n_vertices} vertices, "
        f"{len(from_pkl.faces)} triangles)"
    )
    print(f"preview: {preview}")
    return 0
