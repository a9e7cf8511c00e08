"""``ofer-worker faces PHOTO``: the faces the worker finds in a photo, with their boxes and warnings.

Face 0 is the one a reconstruction uses by default (nearest the centre); ``--face N`` chooses another.
Only the detectors run (no torch), so this is quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WorkerError

if TYPE_CHECKING:
    from .preprocess.detect import FaceDetection


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    faces = subparsers.add_parser("faces", help="list the faces found in a photo (boxes, confidence, warnings)")
    faces.add_argument("photo", type=Path)
    faces.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="look only here")
    faces.add_argument("--json", action="store_true", help="machine-readable output")
    faces.set_defaults(run=run_faces)


def face_lines(detection: FaceDetection, warnings: list[dict[str, str]]) -> list[str]:
    """The CLI's lines about the face a result was made from."""
    box = ", ".join(str(round(float(v))) for v in detection.box)
    confidence = "none (no detector saw it)" if detection.confidence is None else f"{detection.confidence:.2f}"
    found_on = f" on {detection.variant}" if detection.variant else ""
    lines = [
        f"  face:          {detection.index} of {detection.n_faces}, box [{box}] "
        f"({detection.method}{found_on}; confidence {confidence})"
    ]
    lines += [f"  WARNING {w.get('code', '')}: {w.get('message', '')}" for w in warnings]
    return lines


def run_faces(args: argparse.Namespace) -> int:
    from .preprocess.detect import FaceDetector
    from .preprocess.image import load_image
    from .preprocess.input_checks import input_warnings

    try:
        image = load_image(args.photo)
        with FaceDetector() as detector:
            faces = detector.detect_all(image, box=args.box)
    except WorkerError as exc:
        print(f"error ({exc.code}): {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 1
    if args.json:
        listing = [face.to_meta() | {"warnings": input_warnings(face)} for face in faces]
        print(json.dumps({"photo": str(args.photo), "faces": listing}, indent=1))
        return 0
    print(f"{args.photo}: {len(faces)} face{'s' if len(faces) != 1 else ''} (nearest the centre first)")
    for face in faces:
        print("\n".join(face_lines(face, input_warnings(face))))
    if len(faces) > 1:
        print("Reconstruct another face with --face N (batch: --all-faces for one result per face).")
    return 0
