"""Acceptance: nothing from the checkout but the built zip. Install it into a Blender with an empty user
folder, create the managed environment with the add-on's own operator (pinned torch; online access granted
through OFER_ALLOW_ONLINE=1, which counts in background mode only), Reconstruct the sample photo with that
environment and import the head. Prints the environment's time and size (the README quotes them)."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
TORCH = "torch==2.13.0"  # on these machines pip finds it as a local wheel (/opt/wheels)


def test_zip_to_managed_environment_to_reconstructed_head(tmp_path, extension_zip, zip_scenario) -> None:
    photo = tmp_path / "photo.jpg"  # a copy: the scenario must not need the checkout
    shutil.copyfile(SAMPLE, photo)
    out = tmp_path / "out"
    out.mkdir()
    info = zip_scenario(
        ["acceptance", str(extension_zip), str(photo), str(out), TORCH],
        tmp_path / "user",
        timeout=3600,
        extra_env={"OFER_ALLOW_ONLINE": "1"},
    )
    assert info["torch"].startswith("2.13.0") and info["torch_build"] == "cpu"
    assert info["keys"] == 1 + 2 + 4
    assert "mediapipe" in info["packages"] and "ofer_blender_worker" in info["packages"]
    print(
        f"\nmanaged environment: {info['env_seconds']} s, {info['env_size_gb']} GB "
        f"({info['torch_command']}); Reconstruct {info['reconstruct_seconds']} s, face found by {info['detection']}; "
        f"packages: {info['packages']}"
    )
