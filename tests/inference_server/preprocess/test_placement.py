"""Locating a crop in a photo, and the placement distances, against transforms made on purpose."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from inference_server.preprocess.crops import farl_transform
from inference_server.preprocess.placement import (
    CropNotLocatedError,
    centre_offset,
    locate_crop,
    mean_displacement,
    square_from_farl_transform,
    transform_scale,
)


def test_a_rotated_crop_is_located_to_a_fraction_of_a_pixel() -> None:
    photo = data.astronaut()
    angle = np.radians(17)
    scale = 0.6
    transform = np.array(
        [[scale * np.cos(angle), -scale * np.sin(angle), -20.0], [scale * np.sin(angle), scale * np.cos(angle), -80.0]]
    )
    crop = cv2.warpAffine(photo, transform, (112, 112), flags=cv2.INTER_LINEAR)
    found = locate_crop(crop, photo)
    assert found.inliers >= 8
    assert mean_displacement(transform, found.transform, 112) < 0.5


def test_a_rotation_free_crop_is_located_without_rotation() -> None:
    photo = data.astronaut()
    transform, _ = farl_transform(np.array([150.0, 60.0, 300.0, 230.0]))
    crop = cv2.warpAffine(photo, transform, (224, 224), flags=cv2.INTER_LINEAR)
    found = locate_crop(crop, photo, rotation=False)
    assert found.transform[0, 1] == 0.0 and found.transform[1, 0] == 0.0
    assert centre_offset(transform, found.transform, 224) < 0.5
    assert transform_scale(found.transform) == pytest.approx(transform_scale(transform), rel=0.005)


def test_a_crop_from_another_photo_is_not_located() -> None:
    with pytest.raises(CropNotLocatedError):
        locate_crop(np.full((112, 112, 3), 128, np.uint8), data.astronaut())


def test_distances_between_known_transforms() -> None:
    reference, side = farl_transform(np.array([100.0, 100.0, 200.0, 200.0]))
    shifted = reference + np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    assert centre_offset(reference, shifted, 224) == pytest.approx(5.0)
    assert mean_displacement(reference, shifted, 224) == pytest.approx(5.0)
    # A pure scale about the crop centre leaves the centre in place but moves the rest.
    c = 111.5
    about_centre = np.array([[1.1, 0.0, -0.1 * c], [0.0, 1.1, -0.1 * c]])
    scaled = about_centre @ np.vstack([reference, [0, 0, 1]])
    assert centre_offset(reference, scaled, 224) == pytest.approx(0.0, abs=1e-9)
    assert mean_displacement(reference, scaled, 224) > 5.0
    centre, recovered_side = square_from_farl_transform(reference)
    np.testing.assert_allclose(centre, (150.0, 150.0))
    assert recovered_side == pytest.approx(side)
