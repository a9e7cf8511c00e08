"""The DEMO head as package data: the ICT Face Model Light converted to the FLAME file layout.

``inference_server/assets/demo_head/`` holds ``DEMO_ict_head.npz`` (FLAME fields; the bases in float16,
compressed — the zero padding to 300 + 100 columns costs nothing there), the MIT notice of the ICT
Face Model, and ``PROVENANCE.json`` (source commit, converter version, what was measured). It is read
through the same loader as a user's FLAME ``.npz``; the extra arrays (preview colours, the ARKit →
expression-mode matrix) are read next to it.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import MissingAssetError
from ..flame.loading import flame_file_fields, load_flame_model
from ..flame.model_data import FlameModelData

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_head"
MODEL_FILE = "DEMO_ict_head.npz"
LICENSE_FILE = "LICENSE-ICT-FaceKit.txt"
PROVENANCE_FILE = "PROVENANCE.json"
#: Stored in float16: displacement fields (≤ 2 cm, so ≤ 0.01 mm rounding) and the skin weights.
_HALF_FIELDS = ("shapedirs", "posedirs")
#: Fields of the package file that are not FLAME fields (the loader ignores them).
_EXTRA_FIELDS = ("vertex_colors", "arkit_names", "arkit_to_expression")

ICT_LICENSE = """The DEMO head (DEMO_ict_head.npz) is converted from the ICT Face Model Light,
https://github.com/ICT-VGL/ICT-FaceKit, by inference_server/demo/ict_convert.py.

MIT License

Copyright (c) 2020 USC Institute for Creative Technologies

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.

ICT-FaceKit credits (CREDITS.md of the source repository): Kalle Bladin, Owen Ingraham, Yajie Zhao,
Pratusha Prasad, Xinglei Ren, Bipin Kishore, Marcel Ramos; interns Yuka Murata, Tal Rastopchin, Xiang Li.
"""


def write_packaged_head(folder: Path, data: FlameModelData, provenance: dict[str, object]) -> list[Path]:
    """Write the model file, the licence notice and the provenance record into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fields = {name: np.asarray(value) for name, value in flame_file_fields(data).items()}
    for name in _HALF_FIELDS:
        fields[name] = fields[name].astype(np.float16)
    for name in ("v_template", "J_regressor", "J", "weights", "lmk_bary_coords", "uv"):
        fields[name] = fields[name].astype(np.float32)
    fields["f"] = fields["f"].astype(np.int32)
    fields["uv_faces"] = fields["uv_faces"].astype(np.int32)
    fields["vertex_colors"] = np.round(data.extra["vertex_colors"] * 255).astype(np.uint8)
    expressions = dict(provenance.get("expressions", {}))  # type: ignore[call-overload]
    fields["arkit_names"] = np.array(expressions.pop("arkit_names"), dtype="U32")
    fields["arkit_to_expression"] = np.asarray(expressions.pop("arkit_to_expression"), dtype=np.float32)
    provenance = provenance | {"expressions": expressions}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **fields)
    model = folder / MODEL_FILE
    model.write_bytes(buffer.getvalue())
    (folder / LICENSE_FILE).write_text(ICT_LICENSE, encoding="utf-8")
    (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    return [model, folder / LICENSE_FILE, folder / PROVENANCE_FILE]


def load_packaged_head(folder: Path | None = None) -> FlameModelData:
    """The DEMO head from the package (float64 arrays, like any loaded FLAME model).

    ``extra`` holds ``vertex_colors`` (V, 3) in [0, 1], ``arkit_names`` and ``arkit_to_expression``
    (modes × ARKit shapes) and the converter version.
    """
    path = Path(folder or PACKAGE_DIR) / MODEL_FILE
    if not path.is_file():
        raise MissingAssetError(
            f"the DEMO head is missing from the package: {path}",
            "reinstall the worker, or rebuild it with python -m inference_server.demo.ict_convert ICT-FaceKit",
        )
    data = load_flame_model(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            extra = {name: archive[name] for name in _EXTRA_FIELDS}
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise MissingAssetError(f"{path} lacks the DEMO head's colours ({exc})", "reinstall the worker") from exc
    data.extra.update(
        vertex_colors=extra["vertex_colors"].astype(np.float64) / 255.0,
        arkit_names=[str(name) for name in extra["arkit_names"]],
        arkit_to_expression=extra["arkit_to_expression"].astype(np.float64),
        generator_version=_converter_version(Path(folder or PACKAGE_DIR)),
    )
    return data


def _converter_version(folder: Path) -> str:
    try:
        return str(json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))["converter_version"])
    except (OSError, ValueError, KeyError):
        return "unknown"
