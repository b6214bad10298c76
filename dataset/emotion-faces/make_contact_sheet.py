"""Write ``contact_sheet.png`` beside this file: the first faces of each class, labelled.

The sheet shows faces 0-7 of every class at 64 px, seed 0: the images that
``kerasemote data prepare --source emotion-faces --size 64`` writes as
``images/emotion-faces_<label>_000N.png``.

    python dataset/emotion-faces/make_contact_sheet.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from kerasemote.data.sources.emotion_faces import face_examples
from kerasemote.images import make_grid

SHEET = Path(__file__).with_name("contact_sheet.png")
PER_CLASS, SIZE, SEED = 8, 64, 0


def contact_sheet() -> Image.Image:
    """One row per class (happy, sad, angry, in love), each face labelled."""
    images, labels = face_examples(PER_CLASS, SIZE, SEED)
    return make_grid(images, cols=PER_CLASS, labels=labels)


if __name__ == "__main__":
    contact_sheet().save(SHEET)
    print(f"wrote {SHEET}")
