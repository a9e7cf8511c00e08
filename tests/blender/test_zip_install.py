"""The built zip in a Blender with an empty user folder: install, enable, import a worker-made result,
scroll the hypotheses, export FBX and glTF and read them back, disable, uninstall.

This is the test the version matrix (tests/blender/matrix.py) runs with every supported Blender.
"""

from __future__ import annotations

import zipfile

import bpy


def test_the_zip_installs_imports_exports_and_uninstalls_in_an_empty_user_folder(
    tmp_path, extension_zip, result_factory, zip_scenario
) -> None:
    archive = extension_zip
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    # The worker's source and packaging metadata travel in the zip (the managed environment installs them).
    assert {"pyproject.toml", "inference_server/__init__.py", "inference_server/pipeline.py"} <= names
    result = result_factory(tmp_path / "result.npz", n_identities=3, n_expressions=4)
    out = tmp_path / "out"
    out.mkdir()
    info = zip_scenario(["lifecycle", str(archive), str(result), str(out)], tmp_path / "user", timeout=600)
    assert info["blender"] == bpy.app.version_string
    assert info["keys"] == 1 + 2 + 4 and info["bones"] == 5 and info["exports"] == ["FBX", "GLB"]
    print(
        f"Blender {info['blender']} (Python {info['python']}): zip installed, enabled, {info['keys']} shape keys "
        f"and {info['bones']} bones imported, scrolled (max {info['max_error_m']:.1e} m off), "
        f"{'+'.join(info['exports'])} exported and re-imported, disabled, uninstalled"
    )
