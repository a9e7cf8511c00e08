"""The faces the worker finds in a photo, listed in Blender before Reconstruct (bpy-free).

``find_faces`` runs the worker's ``faces PHOTO --json`` command once, synchronously (detectors only, no
torch: a few seconds), with the same interpreter or command line as the worker itself. The list is kept
on the Image datablock as a JSON custom property, so it is saved with the .blend file and drawn over the
photo in the Image Editor; choosing a face stores its number, which Reconstruct sends as ``face``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ids import IMAGE_BOX_KEY, IMAGE_FACE_KEY, IMAGE_FACES_KEY, IMAGE_POINTS_KEY

#: Seconds the worker may take to list the faces (its first start imports the detectors).
FIND_TIMEOUT = 180.0


class FaceListError(RuntimeError):
    """The worker could not list the faces; the message says why and what to do."""


@dataclass(frozen=True)
class FoundFace:
    """One listed face: its number (0 nearest the centre), box [x0, y0, x1, y1] in photo pixels (origin
    top-left, y down), detector confidence (None: only the face mesh saw it) and warning codes."""

    index: int
    box: tuple[float, float, float, float]
    confidence: float | None
    warnings: tuple[str, ...]

    def label(self) -> str:
        confidence = "mesh only" if self.confidence is None else f"{self.confidence:.2f}"
        notes = f", {', '.join(self.warnings)}" if self.warnings else ""
        return f"Face {self.index} ({confidence}{notes})"


def faces_command(worker_command: Sequence[str], photo: str) -> list[str]:
    """The worker's ``serve`` command line turned into ``faces PHOTO --json``."""
    command = list(worker_command)
    if "serve" not in command:
        raise FaceListError(
            "The worker command has no 'serve' step, so the faces command cannot be derived from it. "
            "Set the worker command in the add-on preferences to end with 'serve'."
        )
    at = len(command) - 1 - command[::-1].index("serve")
    return [*command[:at], "faces", photo, "--json", *command[at + 1 :]]


def parse_faces(stdout: str) -> list[FoundFace]:
    """The faces of the worker's ``faces --json`` output."""
    try:
        listing = json.loads(stdout)["faces"]
        return [
            FoundFace(
                index=int(face["face_index"]),
                box=(float(face["box"][0]), float(face["box"][1]), float(face["box"][2]), float(face["box"][3])),
                confidence=None if face.get("confidence") is None else float(face["confidence"]),
                warnings=tuple(str(w["code"]) for w in face.get("warnings", [])),
            )
            for face in listing
        ]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise FaceListError(f"The worker's face list could not be read ({exc}); see the worker log.") from exc


def find_faces(worker_command: Sequence[str], env: Mapping[str, str], photo: str) -> list[FoundFace]:
    """Run the worker's face listing on ``photo`` (a path on disk) and return the faces."""
    try:
        done = subprocess.run(
            faces_command(worker_command, photo),
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=FIND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FaceListError(
            f"The worker could not be run to list the faces: {exc}. Check the worker settings."
        ) from exc
    if done.returncode != 0:
        # The worker prints "error (code): message" and "fix: ..." on stderr (no_face, bad_image, …).
        lines = [line.strip() for line in done.stderr.strip().splitlines() if line.strip()]
        detail = " ".join(lines[-2:]) if lines else f"exit status {done.returncode}"
        raise FaceListError(f"No faces listed: {detail}")
    return parse_faces(done.stdout)


def store(image: Any, faces: Sequence[FoundFace]) -> None:
    """Keep the list on the image (replacing an earlier one) and forget an earlier choice."""
    image[IMAGE_FACES_KEY] = json.dumps(
        [
            {"index": f.index, "box": list(f.box), "confidence": f.confidence, "warnings": list(f.warnings)}
            for f in faces
        ]
    )
    if IMAGE_FACE_KEY in image:
        del image[IMAGE_FACE_KEY]


def stored(image: Any) -> list[FoundFace]:
    """The list kept on the image (empty when the faces were not listed or the property is damaged)."""
    if image is None or IMAGE_FACES_KEY not in image:
        return []
    try:
        return [
            FoundFace(int(f["index"]), tuple(float(v) for v in f["box"]), f["confidence"], tuple(f["warnings"]))  # type: ignore[arg-type]
            for f in json.loads(str(image[IMAGE_FACES_KEY]))
        ]
    except (ValueError, KeyError, TypeError):
        return []


def choose(image: Any, index: int) -> FoundFace:
    """Make face ``index`` of the stored list the one Reconstruct uses; a box or points marked on the
    image would override it, so they are cleared."""
    faces = {f.index: f for f in stored(image)}
    if index not in faces:
        raise FaceListError(
            f"There is no face {index} in this photo's list ({len(faces)} listed); find the faces again."
        )
    image[IMAGE_FACE_KEY] = int(index)
    for key in (IMAGE_BOX_KEY, IMAGE_POINTS_KEY):
        if key in image:
            del image[key]
    return faces[index]


def chosen(image: Any) -> int | None:
    """The chosen face number, or None."""
    if image is None or IMAGE_FACE_KEY not in image:
        return None
    return int(image[IMAGE_FACE_KEY])
