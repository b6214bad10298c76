"""Samplers by name or as objects: what each name builds, and what generate() does with a ready sampler."""

import numpy as np
import pytest

from kerasemote.config import TINY
from kerasemote.schedulers import (
    KERAS_CV_OPTIONS,
    SAMPLERS,
    DDIMSampler,
    EulerAncestralSampler,
    EulerSampler,
    NoiseSchedule,
    get_sampler,
    resolve_sampler,
)

FAST = dict(steps=3, height=32, width=32, progress=False)


# --------------------------------------------------------------------------- names


def test_ddim_kerascv_is_ddim_with_kerascv_options():
    sampler = get_sampler("ddim-kerascv", NoiseSchedule())
    assert type(sampler) is DDIMSampler
    assert (sampler.timestep_spacing, sampler.set_alpha_to_one, sampler.prev_timestep) == (
        KERAS_CV_OPTIONS["timestep_spacing"], True, "sequence")
    assert sampler.eta == 0.0


def test_a_name_takes_extra_options_but_not_ones_contradicting_it():
    schedule = NoiseSchedule()
    assert get_sampler("ddim-kerascv", schedule, eta=0.5).eta == 0.5
    assert get_sampler("ddim-kerascv", schedule, timestep_spacing="linspace").timestep_spacing == "linspace"
    with pytest.raises(ValueError, match="timestep_spacing: the 'ddim-kerascv' sampler is DDIMSampler with "
                                         "timestep_spacing='linspace', found 'leading'; use 'ddim'"):
        get_sampler("ddim-kerascv", schedule, timestep_spacing="leading")


def test_an_option_the_named_sampler_does_not_take_is_refused():
    with pytest.raises(ValueError, match="eta: the 'euler' sampler takes timestep_spacing, steps_offset; "
                                         "found eta=0.5"):
        get_sampler("euler", NoiseSchedule(), eta=0.5)


# --------------------------------------------------------------------------- ready samplers


def test_resolve_builds_names_and_passes_ready_samplers_through():
    schedule = NoiseSchedule.from_config(TINY)
    ready = EulerSampler(NoiseSchedule.from_config(TINY), timestep_spacing="trailing")
    assert resolve_sampler(ready, schedule) is ready
    assert resolve_sampler(ready, schedule, eta=None, timestep_spacing=None) is ready  # None: not set
    assert isinstance(resolve_sampler("euler-a", schedule), EulerAncestralSampler)
    assert resolve_sampler("ddim", schedule, eta=0.25, set_alpha_to_one=None).eta == 0.25


def test_a_ready_sampler_refuses_options_set_beside_it():
    schedule = NoiseSchedule()
    with pytest.raises(ValueError, match=r"eta: a ready DDIMSampler carries its own settings, found eta=0.5 "
                                         r"as well; build the sampler with it \(DDIMSampler\(schedule, eta=0.5\)\)"):
        resolve_sampler(DDIMSampler(schedule), schedule, eta=0.5)


@pytest.mark.parametrize("field,value", [("prediction_type", "v_prediction"), ("beta_end", 0.02),
                                         ("num_train_timesteps", 500), ("beta_schedule", "linear")])
def test_a_ready_sampler_on_another_schedule_is_refused_naming_the_field(field, value):
    model_schedule = NoiseSchedule()
    other = NoiseSchedule(**{field: value})
    expected = getattr(model_schedule, field)
    message = (f"sampler: DDIMSampler's NoiseSchedule: expected the model's {field}={expected!r}, "
               f"found {value!r}; build the sampler on NoiseSchedule.from_config(model.config).")
    with pytest.raises(ValueError) as error:
        resolve_sampler(DDIMSampler(other), model_schedule)
    assert str(error.value) == message


def test_something_else_than_a_name_or_sampler_is_a_type_error():
    with pytest.raises(TypeError, match="sampler: expected a name in .* or a Sampler, found dict"):
        resolve_sampler({"name": "ddim"}, NoiseSchedule())


# --------------------------------------------------------------------------- generate()


@pytest.fixture(scope="module")
def model():
    from kerasemote.model import StableDiffusion

    return StableDiffusion.random("tiny", seed=0)


def test_generate_with_a_ready_sampler_uses_its_own_options(model):
    schedule = NoiseSchedule.from_config(model.config)
    ready = DDIMSampler(schedule, eta=0.8, timestep_spacing="trailing")
    by_object = model.generate("a face", sampler=ready, seed=3, return_latents=True, **FAST)
    by_name = model.generate("a face", sampler="ddim", eta=0.8, timestep_spacing="trailing", seed=3,
                             return_latents=True, **FAST)
    plain = model.generate("a face", sampler="ddim", seed=3, return_latents=True, **FAST)
    np.testing.assert_allclose(by_object, by_name, atol=1e-6)
    assert np.abs(by_object - plain).max() > 1e-3


def test_generate_refuses_a_ready_sampler_with_generate_options_or_another_schedule(model):
    schedule = NoiseSchedule.from_config(model.config)
    with pytest.raises(ValueError, match="timestep_spacing: a ready EulerSampler carries its own settings"):
        model.generate("x", sampler=EulerSampler(schedule), timestep_spacing="trailing", **FAST)
    with pytest.raises(ValueError, match="set_alpha_to_one: a ready DDIMSampler"):
        model.generate("x", sampler=DDIMSampler(schedule), set_alpha_to_one=True, **FAST)
    with pytest.raises(ValueError, match="expected the model's prediction_type='epsilon', found 'v_prediction'"):
        model.generate("x", sampler=DDIMSampler(NoiseSchedule(prediction_type="v_prediction")), **FAST)


def test_generate_refuses_eta_for_a_sampler_without_one(model):
    with pytest.raises(ValueError, match="eta: the 'dpm\\+\\+-karras' sampler takes"):
        model.generate("x", sampler="dpm++-karras", eta=0.3, **FAST)


@pytest.mark.parametrize("name", ["euler-a", "dpm++-karras", "ddim-kerascv"])
def test_new_samplers_generate_and_repeat_with_the_seed(model, name):
    a = model.generate("a sad emoji", num_images=2, sampler=name, seed=1, return_latents=True, **FAST)
    b = model.generate("a sad emoji", num_images=2, sampler=name, seed=1, return_latents=True, **FAST)
    assert a.shape == (2, 8, 8, 4) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_euler_ancestral_step_noise_follows_the_seed(model):
    # Same initial latents, other seed: only euler-a's step noise differs.
    latents = np.random.default_rng(0).standard_normal((1, 8, 8, 4)).astype("float32")
    a = model.generate("a face", sampler="euler-a", init_latents=latents, seed=1, return_latents=True, **FAST)
    b = model.generate("a face", sampler="euler-a", init_latents=latents, seed=2, return_latents=True, **FAST)
    assert np.abs(a - b).max() > 1e-3


def test_cli_sampler_choices_are_the_library_names():
    from kerasemote.cli import build_parser

    args = build_parser().parse_args(["generate", "a face", "--sampler", "dpm++-karras"])
    assert args.sampler == "dpm++-karras"
    (sub,) = [a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
    (action,) = [a for a in sub.choices["generate"]._actions if "--sampler" in a.option_strings]
    assert list(action.choices) == SAMPLERS and {"euler-a", "dpm++-karras", "ddim-kerascv"} <= set(SAMPLERS)
