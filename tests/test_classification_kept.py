"""``CompiledNetworks``: fits of any number of classes train one kept network, traced once, and give
the classifier an ordinary fit gives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kerasemote.classification import ClassifierTrainConfig, CompiledNetworks, LabelledImages, fit_classifier


def _images(n: int, classes: int, seed: int) -> LabelledImages:
    rng = np.random.default_rng(seed)
    return LabelledImages(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                          labels=np.arange(n) % classes, class_names=[f"c{i}" for i in range(classes)],
                          sources=[f"#{i}" for i in range(n)])


CONFIG = ClassifierTrainConfig(image_size=32, weights="none", epochs=1, batch_size=12, val_fraction=0.0,
                               patience=1, augment=False, dropout=0.0, seed=3)  # one step on every image


def test_fits_of_other_class_counts_train_one_kept_network_traced_once():
    networks = CompiledNetworks()
    three = fit_classifier(_images(12, 3, seed=0), CONFIG, verbose=0, networks=networks)[0]
    (network,) = networks.networks
    traced = network.train_function
    pixels = _images(12, 3, seed=0).images.astype(np.float32)
    before = three.model.predict(pixels, verbose=0)
    five = fit_classifier(_images(10, 5, seed=1), replace(CONFIG, seed=4), verbose=0, networks=networks)[0]

    assert networks.networks == [network] and network.train_function is traced  # no second network, no retrace
    # Each classifier keeps its own classes and weights: the 5-class fit did not overwrite the 3-class one.
    assert three.model.output.shape[-1] == 3 and five.model.output.shape[-1] == 5
    np.testing.assert_array_equal(three.model.predict(pixels, verbose=0), before)
    # The kept head's unused classes take no probability and never train.
    wide = network.predict(pixels, verbose=0)
    assert wide.shape[-1] == CompiledNetworks.UNITS and np.all(wide[:, 5:] == 0.0)
    kernel = np.array(network.get_layer("wide_head").kernel)
    assert np.all(kernel[:, 5:] == 0.0) and np.any(kernel[:, :5] != 0.0)
    np.testing.assert_allclose(network.predict(pixels, verbose=0)[:, :5], five.model.predict(pixels, verbose=0),
                               atol=1e-6)
    # The returned classifier is compiled as an ordinary fit leaves it: a user can evaluate it at once.
    loss, accuracy = three.model.evaluate(pixels, _images(12, 3, seed=0).labels, verbose=0)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0


@pytest.mark.slow  # two ResNet-50 training graphs traced (~45 s)
def test_a_kept_network_trains_the_classifier_an_ordinary_fit_trains():
    three = _images(12, 3, seed=0)
    ordinary = fit_classifier(three, CONFIG, verbose=0)[0]
    fit_classifier(_images(10, 5, seed=1), CONFIG, verbose=0, networks=(networks := CompiledNetworks()))
    kept = fit_classifier(three, CONFIG, verbose=0, networks=networks)[0]  # a later fit, on the reset network

    pixels = three.images.astype(np.float32)
    # Equal up to float rounding: the biases of convolutions followed by batch norm have a true gradient of
    # zero, and Adam's first step turns its rounding noise into steps of up to the learning rate.
    np.testing.assert_allclose(kept.model.predict(pixels, verbose=0), ordinary.model.predict(pixels, verbose=0),
                               atol=2e-3)
    for a, b in zip(ordinary.model.non_trainable_variables, kept.model.non_trainable_variables):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-4, err_msg=a.path)
