"""The contact sheet's identity labels (readable relative scores, in the add-on's key-name wording) and its
warnings banner (every warning in full)."""

from __future__ import annotations

import cv2
import numpy as np

from inference_server.contact_sheet import _with_warnings, identity_label, warning_lines


def test_flat_scores_get_labels_that_tell_the_identities_apart() -> None:
    """Ten kept scores of a flat softmax over 100 samples read as two or three values at the old label's three
    decimals (p=0.014, 0.013, 0.012); the labels (rank and share of the best) must differ and fall with the rank."""
    scores = np.array([0.0136, 0.0133, 0.0131, 0.0129, 0.0128, 0.01275, 0.0127, 0.0126, 0.0125, 0.0124])
    assert len({f"{s:.3f}" for s in scores}) <= 3
    labels = [identity_label(k + 1, float(s), float(scores[0])) for k, s in enumerate(scores)]
    assert labels[0] == "ID 01"
    assert labels[1] == f"ID 02 ({100 * 0.0133 / 0.0136:.3g}% of ID 01)" == "ID 02 (97.8% of ID 01)"
    assert len(set(labels)) == len(labels)
    shares = [float(label.split("(")[1].split("%")[0]) for label in labels[1:]]
    assert shares == sorted(shares, reverse=True)


def test_extreme_shares_stay_readable() -> None:
    assert identity_label(2, 0.5, 0.5) == "ID 02 (100% of ID 01)"
    assert identity_label(3, 1e-9, 0.9) == "ID 03 (<0.001% of ID 01)"
    assert identity_label(4, 0.2, 0.0) == "ID 04 (<0.001% of ID 01)"


LONG = {
    "code": "landmarks_on_occluder",
    "message": "The photo shows something other than a face under these landmarks: left mouth corner (a hand, a "
    "mask, hair, sunglasses or the frame's edge). They are guessed, so the crops may be misaligned; click the "
    "five points if you can see where they are.",
}


def test_a_long_warning_is_wrapped_in_full_not_cut() -> None:
    """The advice at the end of a warning ("click the five points") used to be cut off with "..."."""
    width = 1536
    lines = warning_lines([LONG, {"code": "fit_untrusted", "message": "No camera or head pose."}], width)
    limit = width // 9
    assert all(len(line) <= limit for line in lines)
    assert not any(line.endswith("...") for line in lines)
    assert " ".join(line.strip() for line in lines[:-1]) == f"WARNING {LONG['code']}: {LONG['message']}"
    assert lines[-1] == "WARNING fit_untrusted: No camera or head pose." and len(lines) == 3
    assert lines[1].startswith("    ")  # a continuation, not a new warning
    # every line is drawn: the banner grows with them, and its last line carries ink
    sheet = _with_warnings(np.full((100, width, 3), 255, np.uint8), [LONG])
    banner = sheet[: sheet.shape[0] - 100]
    assert banner.shape[0] == 10 + 24 * 2
    ink = cv2.cvtColor(banner, cv2.COLOR_RGB2GRAY) < 200
    assert ink[34:58].any() and ink[10:34].any()
