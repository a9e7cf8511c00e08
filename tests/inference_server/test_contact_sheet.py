"""The contact sheet's identity labels: readable relative scores, in the add-on's key-name wording."""

from __future__ import annotations

import numpy as np

from inference_server.contact_sheet import identity_label


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
