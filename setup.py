"""Package layout; everything else (metadata, dependencies, entry points) is in setup.cfg.

The one thing setup.cfg's ``find:`` cannot say: two folders committed at the repository root ship
inside the wheel without a second copy in git. ``weights/kerasemote-tiny/``, the shipped model
(issue 7), installs as the data package ``kerasemote.pretrained``, found by
``kerasemote.presets.shipped_model_dir``; ``dataset/noto-emoji/``, the prepared Noto Color Emoji
sample (``--source noto-sample``), installs as ``kerasemote.samples``, found by
``kerasemote.data.sources.samples.shipped_sample_dir``. Each finder looks in either place.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["kerasemote", "kerasemote.*"]) + ["kerasemote.pretrained", "kerasemote.samples"],
    package_dir={"kerasemote.pretrained": "weights", "kerasemote.samples": "dataset"},
    package_data={
        "kerasemote.pretrained": ["kerasemote-tiny/*"],
        "kerasemote.samples": ["noto-emoji/*.json", "noto-emoji/*.jsonl", "noto-emoji/README.md",
                               "noto-emoji/images/*.png"],
    },
)
