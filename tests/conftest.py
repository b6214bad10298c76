import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
from gcs_fixture import gcs_bucket, gcs_emulator  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """One random tiny model directory (seed 0) for the whole session: tests load it, never change it."""
    from kerasemote.model import StableDiffusion

    path = str(tmp_path_factory.mktemp("tiny-model") / "model")
    StableDiffusion.random("tiny", seed=0).save(path)
    return path


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory) -> str:
    """One random model of the ``small`` test configuration (seed 0) for the whole session: loaded, never changed."""
    from small_model import SMALL

    from kerasemote.model import StableDiffusion

    path = str(tmp_path_factory.mktemp("small-model") / "model")
    StableDiffusion.random(SMALL, seed=0).save(path)
    return path
