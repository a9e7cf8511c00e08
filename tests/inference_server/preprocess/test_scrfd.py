"""SCRFD decoding, checked with a hand-built ONNX model whose outputs encode known faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_server.errors import MissingAssetError
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.scrfd import ScrfdDetector, non_maximum_suppression

SIZE = 224  # the official det_size
COUNTS = {8: (SIZE // 8) ** 2 * 2, 16: (SIZE // 16) ** 2 * 2, 32: (SIZE // 32) ** 2 * 2}


def _outputs() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Raw outputs with one face at stride 16 (plus a weaker duplicate at stride 8, suppressed, and a
    hit under the threshold), and the face's expected box and points in input pixels."""
    scores = {s: np.zeros((n, 1), np.float32) for s, n in COUNTS.items()}
    boxes = {s: np.zeros((n, 4), np.float32) for s, n in COUNTS.items()}
    kps = {s: np.zeros((n, 10), np.float32) for s, n in COUNTS.items()}
    # Stride 16, row 5, column 7, second anchor: centre (7·16, 5·16) = (112, 80).
    index = (5 * (SIZE // 16) + 7) * 2 + 1
    scores[16][index] = 0.9
    boxes[16][index] = [2.0, 3.0, 2.5, 4.0]
    offsets = np.array([[-1.0, -1.5], [1.0, -1.5], [0.0, 0.0], [-0.8, 1.5], [0.8, 1.5]], np.float32)
    kps[16][index] = offsets.reshape(-1)
    expected_box = np.array([112 - 32, 80 - 48, 112 + 40, 80 + 64], float)
    expected_points = np.array([112.0, 80.0]) + offsets * 16
    # Stride 8, row 10, column 14, anchor 0: centre (112, 80), nearly the same box, lower score.
    dup = (10 * (SIZE // 8) + 14) * 2
    scores[8][dup] = 0.7
    boxes[8][dup] = [4.0, 6.0, 5.0, 8.0]
    # Below the 0.5 threshold: ignored.
    scores[32][3] = 0.45
    boxes[32][3] = [1.0, 1.0, 1.0, 1.0]
    outputs = [scores[s] for s in (8, 16, 32)] + [boxes[s] for s in (8, 16, 32)] + [kps[s] for s in (8, 16, 32)]
    return outputs, expected_box, expected_points


def _write_model(path: Path, outputs: list[np.ndarray]) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = [f"out{i}" for i in range(len(outputs))]
    # Each output is the constant plus 0 × (mean of the input), so the graph really consumes its input.
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0)]
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"]))
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name, value in zip(names, outputs, strict=True):
        initializers.append(numpy_helper.from_array(value, f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
    graph = helper.make_graph(
        nodes,
        "fake_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape))
            for n, v in zip(names, outputs, strict=True)
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_decoding_boxes_points_threshold_and_nms(tmp_path: Path) -> None:
    outputs, expected_box, expected_points = _outputs()
    path = tmp_path / "scrfd.onnx"
    _write_model(path, outputs)
    photo = np.zeros((448, 448, 3), np.uint8)  # scaled by 0.5 into the 224 input
    faces = ScrfdDetector(path).detect(photo)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, expected_box * 2, atol=1e-4)
    np.testing.assert_allclose(faces[0].points5, expected_points * 2, atol=1e-4)
    assert faces[0].score == pytest.approx(0.9)

    found = FaceDetector(scrfd_model=path).detect(photo)  # "auto" prefers SCRFD when a model is given
    assert found.method == "scrfd" and found.landmarks is None
    np.testing.assert_allclose(found.points5, expected_points * 2, atol=1e-4)


def test_missing_or_wrong_model_files(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="does not exist"):
        ScrfdDetector(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(MissingAssetError, match="ONNX"):
        ScrfdDetector(junk)
    outputs, _, _ = _outputs()
    three = tmp_path / "three.onnx"
    _write_model(three, outputs[:3])
    with pytest.raises(MissingAssetError, match="9"):
        ScrfdDetector(three)


def test_non_maximum_suppression() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 4.5]], float)
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    # Box 0 overlaps box 1 with IoU 81/119 > 0.4: dropped.
    # Box 3 overlaps box 1 with IoU 31.5/113.5 < 0.4: kept.
    assert non_maximum_suppression(boxes, scores, 0.4) == [1, 2, 3]
