"""The photos of one job: loaded, checked, detected, cropped and encoded once each.

A job has one **main** photo (``image``: expressions, head pose, camera, fit and texture come from it) and
optionally **extra** photos of the same person (``photos``), which only add evidence for the identity
(``identity_stage``). Every photo goes through the same stages as the main one — load, detect, crop, encode
— once. Problems are found before any sampling and name the photo:

- a photo that cannot be read, or shows no face → the job fails (``bad_image`` / ``no_face``) saying which
  photo and how to fix it. A photo is not skipped silently: the user chose it, and an identity pooled
  from fewer views than asked for would look like a result of all of them.
- the same picture twice (same SHA-256 of the file, under any name) → ``bad_request``: a copy adds no
  view and would count that view twice in the pooled ranking.

Extra photos are detected with the default choice (the face nearest the centre); ``box``, ``points`` and
``face`` of the request apply to the main photo only. Their input warnings are kept per photo in the
result's ``meta.photos``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import BadRequestError, WorkerError
from .identity_stage import IdentityConditions, RankedIdentities, photo_seed
from .model_bundle import ModelBundle
from .preprocess.crops import ArcFaceCrop, ChannelOrder, FarlCrop, arcface_crop, farl_crop
from .preprocess.detect import FaceDetection, FaceDetector
from .preprocess.face_box import crop_box
from .preprocess.image import LoadedImage, load_image
from .preprocess.input_checks import input_warnings
from .protocol import MAX_EXTRA_PHOTOS, MAX_POOLED_SHAPES, ReconstructArgs

StepFn = Callable[[int, int, str], None]

_EXTRA_FIX = (
    "Remove this photo from the extra photos, or replace it with a sharper photo in which the person's face "
    "is visible (every photo must show the same person)."
)


@dataclass
class Encodings:
    """The image conditions, one row each: computed once per image, never per sample."""

    idgen: torch.Tensor  # (1, 512) normalised ArcFace of IdGen's encoder
    expgen: torch.Tensor  # (1, 1024) [FaRL ‖ ArcFace] of ExpGen's encoders
    idrank: torch.Tensor  # (1, 1024) [FaRL ‖ ArcFace] of IdRank's encoders


@dataclass
class PreparedPhoto:
    """One photo after detection and cropping."""

    image: LoadedImage
    detection: FaceDetection
    arcface: ArcFaceCrop
    farl: FarlCrop


def photo_label(index: int, count: int, path: str) -> str:
    """How messages name a photo: 'photo 2 of 3 (side.jpg)'; the main photo says so."""
    role = "the main photo, " if index == 0 else ""
    return f"photo {index + 1} of {count} ({role}{Path(path).name})"


def _named(exc: WorkerError, label: str, fix: str | None = None) -> WorkerError:
    """The same kind of error (same protocol code), its message saying which photo."""
    return type(exc)(f"{label}: {exc.message}", exc.fix if fix is None else fix)


def request_paths(args: ReconstructArgs) -> list[str]:
    """The job's photos, main first; the protocol's bounds hold for callers that skip its parser (the CLI)."""
    if len(args.photos) > MAX_EXTRA_PHOTOS:
        raise BadRequestError(
            f"{len(args.photos)} extra photos were given; at most {MAX_EXTRA_PHOTOS} are taken",
            "Choose the clearest photos of the person (a few views that differ in pose are enough).",
        )
    n_photos = 1 + len(args.photos)
    if args.n_shapes * n_photos > MAX_POOLED_SHAPES:
        raise BadRequestError(
            f"{args.n_shapes} identity samples × {n_photos} photos is more than {MAX_POOLED_SHAPES}",
            f"Lower the number of identity samples to at most {MAX_POOLED_SHAPES // n_photos}.",
        )
    return [args.image, *args.photos]


def load_photos(paths: Sequence[str], step: StepFn) -> list[LoadedImage]:
    """Read every photo (``step(done, total, name)`` after each); refuse a repeated picture."""
    images: list[LoadedImage] = []
    seen: dict[str, int] = {}
    for i, path in enumerate(paths):
        label = photo_label(i, len(paths), path)
        try:
            image = load_image(path)
        except WorkerError as exc:
            raise (exc if len(paths) == 1 else _named(exc, label)) from None
        first = seen.setdefault(image.sha256, i)
        if first != i:
            raise BadRequestError(
                f"{label} is the same picture as {photo_label(first, len(paths), paths[first])}",
                "Remove the repeated photo: a copy adds no new view and would count that view twice.",
            )
        images.append(image)
        step(i + 1, len(paths), f"{image.width}x{image.height}")
    return images


def prepare_photos(
    images: Sequence[LoadedImage],
    detector: FaceDetector,
    args: ReconstructArgs,
    *,
    box_convention: str,
    channel_order: ChannelOrder,
    step: StepFn,
) -> list[PreparedPhoto]:
    """Find the face in every photo (the request's box / points / face for the main one) and cut its crops."""
    prepared = []
    for i, image in enumerate(images):
        try:
            if i == 0:
                detection = detector.detect(image, box=args.box, points=args.points, face=args.face)
            else:
                detection = detector.detect(image)
        except WorkerError as exc:
            if len(images) == 1:
                raise
            raise _named(exc, photo_label(i, len(images), image.path), None if i == 0 else _EXTRA_FIX) from None
        arc = arcface_crop(image.rgb, detection.points5, channel_order)
        far = farl_crop(image.rgb, crop_box(detection.box, detection.points5, box_convention))
        prepared.append(PreparedPhoto(image, detection, arc, far))
        step(i + 1, len(images), detection.method)
    return prepared


def encode(bundle: ModelBundle, arc: ArcFaceCrop, far: FarlCrop, device: torch.device) -> Encodings:
    """Run every distinct encoder once on the single crop (never on tiled copies, never twice)."""
    blob = torch.from_numpy(np.ascontiguousarray(arc.blob))[None].to(device)
    img = torch.from_numpy(np.ascontiguousarray(far.tensor))[None].to(device)
    with torch.no_grad():
        idgen, expgen, idrank = bundle.contexts(blob, img)
        return Encodings(idgen=idgen, expgen=expgen, idrank=idrank)


def encode_photos(
    bundle: ModelBundle, photos: Sequence[PreparedPhoto], device: torch.device, step: StepFn
) -> tuple[Encodings, IdentityConditions]:
    """Each photo encoded once: the main photo's conditions, and every photo's identity conditions."""
    encodings = []
    for i, photo in enumerate(photos):
        encodings.append(encode(bundle, photo.arcface, photo.farl, device))
        step(i + 1, len(photos), "")
    conditions = IdentityConditions(
        idgen=torch.cat([e.idgen for e in encodings]), idrank=torch.cat([e.idrank for e in encodings])
    )
    return encodings[0], conditions


def photos_meta(photos: Sequence[PreparedPhoto], ranked: RankedIdentities, seed: int) -> dict[str, Any]:
    """``meta.photos`` (every photo, main first, with its own scores of the kept identities) and
    ``meta.identity_pooling``."""
    log_p = ranked.per_photo_log_probabilities
    n_per_photo = len(ranked.source_photo) // len(photos)
    listed = []
    for i, photo in enumerate(photos):
        kept = np.exp(log_p[i, ranked.keep])
        listed.append(
            {
                "role": "main" if i == 0 else "extra",
                "path": str(Path(photo.image.path).resolve()),
                "sha256": photo.image.sha256,
                "width": photo.image.width,
                "height": photo.image.height,
                "detection": photo.detection.to_meta(),
                "warnings": input_warnings(photo.detection),
                "seed": photo_seed(seed, i),
                "samples": [i * n_per_photo, (i + 1) * n_per_photo],
                "identity_score": float(kept[0]),
                # 1: this photo alone would have chosen the same identity among all pooled samples.
                "identity_rank": int(1 + np.sum(log_p[i] > log_p[i, ranked.keep[0]])),
                "identity_scores": [float(v) for v in kept],
            }
        )
        if ranked.consensus_log_density is not None:
            # Where the photos' generators agree: this photo's IdGen-cloud log-density of each kept identity.
            listed[-1]["consensus_log_densities"] = [float(v) for v in ranked.consensus_log_density[i, ranked.keep]]
    pooling = {
        "n_photos": len(photos),
        "n_per_photo": n_per_photo,
        "n_samples": len(ranked.source_photo),
        "rule": ranked.rule,
        "consensus_weight": ranked.consensus_weight,
        "kept_source_photo": [int(v) for v in ranked.source_photo[ranked.keep]],
    }
    return {"photos": listed, "identity_pooling": pooling}
