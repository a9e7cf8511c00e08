"""The panels draw for a scene and for an imported head: every property they show exists."""

from __future__ import annotations

from typing import Any

import bpy
import pytest
from registered import ofer_class, ofer_ops


class Layout:
    """Stands in for UILayout (headless Blender has none): records labels, checks every prop it is given."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: Layout(self.log)

    def prop(self, data: Any, name: str, **kwargs: Any) -> None:
        assert name in data.bl_rna.properties, f"{data} has no property {name!r}"
        self.log.append(f"prop {name}")

    def label(self, text: str = "", **kwargs: Any) -> None:
        self.log.append(text)

    def operator(self, idname: str, **kwargs: Any) -> Any:
        module, _, name = idname.partition(".")
        assert hasattr(getattr(bpy.ops, module), name), idname
        self.log.append(f"op {idname}")
        return type("Props", (), {})()


def _draw(panel_type: Any, context: Any) -> list[str]:
    log: list[str] = []
    panel = type("P", (), {"layout": Layout(log)})()
    panel_type.draw(panel, context)
    return log


def test_reconstruct_panel_offers_presets_default_fast(addon) -> None:
    settings = bpy.context.scene.ofer_settings
    assert settings.preset == "fast"
    drawn = _draw(ofer_class("OFER_PT_reconstruct"), bpy.context)
    assert "prop preset" in drawn and "prop sampler" not in drawn and "prop steps" not in drawn
    settings.preset = "CUSTOM"
    drawn = _draw(ofer_class("OFER_PT_reconstruct"), bpy.context)
    assert "prop sampler" in drawn and "prop steps" in drawn


@pytest.mark.parametrize("fit", ["ok", "untrusted"])
def test_hypotheses_panel_says_how_the_head_sits_on_the_photo(addon, result_factory, tmp_path, fit) -> None:
    path = result_factory(tmp_path / "r.npz", fit=fit)
    assert ofer_ops().import_result(filepath=str(path)) == {"FINISHED"}
    drawn = _draw(ofer_class("OFER_PT_hypotheses"), bpy.context)
    expected = "On the photo" if fit == "ok" else "Not placed on the photo: only 9 of 68 landmarks"
    assert any(line.startswith(expected) for line in drawn), drawn
    if fit == "ok":
        bpy.context.view_layer.objects.active.ofer.expression = 2
        drawn = _draw(ofer_class("OFER_PT_hypotheses"), bpy.context)
        assert "Order: best fit first · EXP 002 is 1.5 px from the visible landmarks" in drawn
    head = bpy.context.view_layer.objects.active
    row = Layout([])
    ofer_class("OFER_UL_identities").draw_item(None, bpy.context, row, head.ofer, head.ofer.identities[1], 0, None, "")
    assert any(text.endswith("%") for text in row.log) and any(text.startswith("p = ") for text in row.log)


def test_hypotheses_panel_for_flame_controls_and_for_a_sequence(addon, result_factory, sequence_file, tmp_path) -> None:
    path = result_factory(tmp_path / "c.npz", flame_controls=True)
    assert ofer_ops().import_result(filepath=str(path), flame_controls=True) == {"FINISHED"}
    drawn = _draw(ofer_class("OFER_PT_hypotheses"), bpy.context)
    assert "op ofer.set_flame_controls" in drawn and "prop expression" in drawn
    assert ofer_ops().import_sequence(filepath=str(sequence_file)) == {"FINISHED"}
    drawn = _draw(ofer_class("OFER_PT_hypotheses"), bpy.context)
    assert any(line.startswith("Sequence:") for line in drawn) and "prop expression" not in drawn
    assert "op ofer.set_flame_controls" not in drawn
