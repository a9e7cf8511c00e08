"""Make ``sample_occluded_face.jpg``: scikit-image's astronaut with a synthetic hand over the mouth.

The picture is NASA's portrait of Eileen Collins (public domain), shipped with scikit-image as
``skimage.data.astronaut()``. The hand is drawn by ``inference_server.preprocess.synthetic_occluders``
from the face's five points, so the sample is reproducible:

    .venv/bin/python -m inference_server.assets.make_sample_photo
"""

from __future__ import annotations

from pathlib import Path

OUTPUT = Path(__file__).resolve().with_name("sample_occluded_face.jpg")
JPEG_QUALITY = 90


def make_sample_photo(output: Path = OUTPUT) -> Path:
    from PIL import Image
    from skimage import data

    from ..preprocess.synthetic_occluders import ASTRONAUT_POINTS5, draw_hand_over_mouth

    occluded = draw_hand_over_mouth(data.astronaut(), ASTRONAUT_POINTS5)
    Image.fromarray(occluded).save(output, quality=JPEG_QUALITY, optimize=True)
    return output


if __name__ == "__main__":
    print(make_sample_photo())
