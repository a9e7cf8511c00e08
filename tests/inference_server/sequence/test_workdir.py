"""The work folder: matching work is kept, other work is cleared, --resume refuses to start from nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_server.errors import BadRequestError
from inference_server.sequence.workdir import WorkFolder, work_folder_for


def test_matching_work_is_resumed_and_other_work_cleared(tmp_path: Path) -> None:
    root = work_folder_for(tmp_path / "clip.npz")
    assert root.name == "clip.npz.work"
    work = WorkFolder(root)
    with pytest.raises(BadRequestError, match="no earlier work"):
        work.open("k1", {}, resume="require")
    assert work.open("k1", {}, resume="auto") == 0
    work.save("fit", 0, {"x": np.arange(3)})
    work.save("fit", 1, {"x": np.arange(4)})
    assert work.open("k1", {}, resume="require") == 2
    assert work.load("fit", 1)["x"].tolist() == [0, 1, 2, 3]  # type: ignore[index]
    (root / "fit" / "000001.npz").write_bytes(b"torn")  # a piece that does not read back is redone
    assert work.load("fit", 1) is None
    with pytest.raises(BadRequestError, match="another clip or settings"):
        work.open("k2", {}, resume="require")
    assert work.open("k2", {}, resume="auto") == 0 and work.load("fit", 0) is None
    work.save("fit", 0, {"x": np.arange(3)})
    assert work.open("k2", {}, resume="restart") == 0 and work.load("fit", 0) is None
