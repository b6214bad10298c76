"""Package layout; everything else (metadata, dependencies, entry points) is in setup.cfg.

The one thing setup.cfg's ``find:`` cannot say: the model shipped with kerasemote is committed
at the repository root as ``weights/kerasemote-tiny/`` (issue 7), and the wheel installs that
folder as the data package ``kerasemote.pretrained``, so ``pip install git+https://...`` carries it
without a second copy in git. ``kerasemote.presets.shipped_model_dir`` finds it in either place.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["kerasemote", "kerasemote.*"]) + ["kerasemote.pretrained"],
    package_dir={"kerasemote.pretrained": "weights"},
    package_data={"kerasemote.pretrained": ["kerasemote-tiny/*"]},
)
