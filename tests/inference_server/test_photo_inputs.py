"""Several photos of one person → one identity, through the whole reconstruction (DEMO assets)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference_server.assets_config import resolve_assets
from inference_server.errors import BadImageError, BadRequestError, NoFaceError
from inference_server.pipeline import ReconstructionOutput, Reconstructor
from inference_server.protocol import MAX_EXTRA_PHOTOS, ReconstructArgs
from inference_server.result import read_result

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
SMALL: dict[str, object] = dict(n_shapes=6, n_expressions=5, top_k=3, sampler="ddim", steps=4, seed=7)


def _args(tmp: Path, photos: list[Path], name: str = "r.npz", **kw: object) -> ReconstructArgs:
    base = SMALL | {"image": str(SAMPLE), "output": str(tmp / name), "photos": tuple(str(p) for p in photos)}
    return ReconstructArgs(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two more views of the sample's person: the photo without the hand, and its mirror image, smaller."""
    from skimage import data

    folder = tmp_path_factory.mktemp("views")
    plain = folder / "plain.png"
    Image.fromarray(data.astronaut()).save(plain)
    mirrored = folder / "mirrored.jpg"
    Image.fromarray(data.astronaut()[:, ::-1]).resize((400, 400)).save(mirrored, quality=92)
    return [plain, mirrored]


@pytest.fixture(scope="module")
def reconstructor() -> Reconstructor:
    return Reconstructor(resolve_assets({}), device="cpu")


@pytest.fixture(scope="module")
def pooled(reconstructor: Reconstructor, views: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("pooled")
    single = reconstructor.run(_args(tmp, [], "single.npz"), lambda *a: None, lambda: False)
    events: list[tuple[str, int, int]] = []

    def record(stage: str, done: int, total: int, message: str = "") -> None:
        events.append((stage, done, total))

    multi = reconstructor.run(_args(tmp, views), record, lambda: False)
    return single, multi, events


def test_every_photo_is_recorded_and_scores_the_chosen_identity(pooled: tuple, views: list[Path]) -> None:
    multi: ReconstructionOutput = pooled[1]
    back = read_result(multi.path)
    photos = back.meta["photos"]
    assert [p["role"] for p in photos] == ["main", "extra", "extra"]
    for photo, path in zip(photos, [SAMPLE, *views], strict=True):
        assert photo["path"] == str(path.resolve())
        assert photo["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert photo["detection"]["n_faces"] >= 1 and len(photo["detection"]["points5"]) == 5
    assert photos[0]["detection"] == back.meta["detection"]  # the main photo is the one the head sits on
    pooling = back.meta["identity_pooling"]
    assert pooling["n_photos"] == 3 and pooling["n_samples"] == 18
    assert [p["samples"] for p in photos] == [[0, 6], [6, 12], [12, 18]]
    # The pooled score is the product of the photos' own scores times exp(w · their clouds' log-densities),
    # renormalised: check it on the kept pairs.
    own = np.array([p["identity_scores"] for p in photos])  # (P, K)
    agree = np.array([p["consensus_log_densities"] for p in photos])  # (P, K)
    weight = pooling["consensus_weight"]
    assert weight > 0 and "KDE" in pooling["rule"]
    for k in range(1, len(back.identity_scores)):
        ratio = back.identity_scores[0] / back.identity_scores[k]
        expected = np.prod(own[:, 0] / own[:, k]) * np.exp(weight * (agree[:, 0] - agree[:, k]).sum())
        np.testing.assert_allclose(ratio, expected, rtol=1e-4)
    assert [p["identity_score"] for p in photos] == pytest.approx(own[:, 0].tolist())
    assert all(p["identity_rank"] >= 1 for p in photos)


def test_expressions_come_from_the_main_photo_alone(pooled: tuple) -> None:
    single, multi = pooled[0].result, pooled[1].result
    # Same ExpGen draw (main photo, seed + 1); only the display order may follow the other identity's fit.
    rows = lambda r: np.sort(np.concatenate([r.expression_params, r.jaw_pose], axis=1), axis=0)  # noqa: E731
    np.testing.assert_allclose(rows(multi), rows(single), atol=1e-6)
    assert multi.meta["image"] == single.meta["image"]
    assert multi.camera is not None and single.camera is not None
    # Photo 0's own draw is the single-photo draw: with extra photos it is still in the pool.
    assert multi.identity_params.shape == single.identity_params.shape


def test_each_photo_is_loaded_detected_and_encoded_once(pooled: tuple) -> None:
    events = pooled[2]
    for stage in ("detect", "encode"):
        assert [(d, t) for s, d, t in events if s == stage and d > 0] == [(1, 3), (2, 3), (3, 3)]
    assert [e for e in events if e[0] == "sample_shapes"][-1][1:] == (12, 12)  # 4 steps × 3 photos


def _fails_before_sampling(rec: Reconstructor, args: ReconstructArgs, error: type, *words: str) -> None:
    events: list[str] = []
    with pytest.raises(error) as info:
        rec.run(args, lambda s, *a: events.append(s), lambda: False)
    for word in words:
        assert word in str(info.value)
    assert "sample_shapes" not in events and not Path(args.output).exists()


def test_bad_extra_photos_name_the_photo_before_any_sampling(
    reconstructor: Reconstructor, views: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    _fails_before_sampling(reconstructor, _args(tmp_path, [views[0], broken]), BadImageError,
                           "photo 3 of 3 (broken.jpg)")  # fmt: skip
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(blank)
    _fails_before_sampling(reconstructor, _args(tmp_path, [blank]), NoFaceError, "photo 2 of 2 (wall.png)", "Remove")
    copy = tmp_path / "copy of plain.png"
    shutil.copy(views[0], copy)
    same = "photo 3 of 3 (copy of plain.png) is the same picture as photo 2 of 3 (plain.png)"
    _fails_before_sampling(reconstructor, _args(tmp_path, [views[0], copy]), BadRequestError, same)
    too_many = [views[0]] * (MAX_EXTRA_PHOTOS + 1)
    _fails_before_sampling(reconstructor, _args(tmp_path, too_many), BadRequestError, "at most")
    # The worker stays usable, and the main photo's own problems keep their single-photo wording.
    _fails_before_sampling(reconstructor, _args(tmp_path, [views[0]], image=str(broken)), BadImageError,
                           "photo 1 of 2 (the main photo, broken.jpg)")  # fmt: skip
