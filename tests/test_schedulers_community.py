"""Euler ancestral ("euler-a") and DPM++ 2M Karras ("dpm++-karras") against diffusers 0.42, step for step."""

import numpy as np
import pytest
import tensorflow as tf

from kerasemote.schedulers import (
    DPMSolverSampler,
    EulerAncestralSampler,
    EulerSampler,
    NoiseSchedule,
    draw_noise,
    get_sampler,
    karras_sigmas,
)

SHAPE = (2, 4, 4, 3)  # (B, H, W, C)
SD_KWARGS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# diffusers keeps alphas_cumprod in float32 (sigma_min off by 1.3e-5 relative); ours is float64.
SIGMA_RTOL = 3e-5
STEP_RTOL = 1e-5


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch(x):
    import torch

    return torch.from_numpy(np.asarray(x, np.float32))


def _euler_a_pair(spacing="leading", prediction_type="epsilon", steps_offset=1):
    diffusers = pytest.importorskip("diffusers")
    ours = EulerAncestralSampler(NoiseSchedule(prediction_type=prediction_type), spacing, steps_offset)
    theirs = diffusers.EulerAncestralDiscreteScheduler(
        **SD_KWARGS, prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=steps_offset
    )
    return ours, theirs


def _dpm_karras_pair(prediction_type="epsilon"):
    diffusers = pytest.importorskip("diffusers")
    ours = get_sampler("dpm++-karras", NoiseSchedule(prediction_type=prediction_type))
    theirs = diffusers.DPMSolverMultistepScheduler(
        **SD_KWARGS, prediction_type=prediction_type, algorithm_type="dpmsolver++", solver_order=2,
        use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1,
    )
    return ours, theirs


def _assert_close(ours, theirs, message):
    theirs = np.asarray(theirs)
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(ours, theirs, atol=STEP_RTOL * scale, rtol=0, err_msg=message)


# --------------------------------------------------------------------------- euler ancestral


@pytest.mark.parity
@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_euler_ancestral_timesteps_sigmas_and_start_match_diffusers(spacing):
    for n in (1, 7, 25):
        ours, theirs = _euler_a_pair(spacing)
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        np.testing.assert_allclose(ours.timesteps, theirs.timesteps.numpy(), atol=1e-4, err_msg=f"{n} steps")
        np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=SIGMA_RTOL, err_msg=f"{n} steps")
        np.testing.assert_allclose(ours.init_noise_sigma, float(theirs.init_noise_sigma), rtol=SIGMA_RTOL)


@pytest.mark.parity
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing,steps", [("leading", 10), ("trailing", 7), ("linspace", 6)])
def test_euler_ancestral_steps_match_diffusers_given_the_same_noise(monkeypatch, prediction_type, spacing, steps):
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as module

    ours, theirs = _euler_a_pair(spacing, prediction_type)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    step_noise = {}
    # diffusers draws its step noise with randn_tensor; hand it the noise ours gets for the same step.
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **kwargs: _torch(step_noise["now"]))
    x = _normal(*SHAPE, seed=5)
    x_ours, x_theirs = x * ours.init_noise_sigma, _torch(x) * theirs.init_noise_sigma
    for i, (t, t_theirs) in enumerate(zip(ours.timesteps, theirs.timesteps)):
        # A toy "model" that depends on its input, so that differences would propagate.
        jitter = _normal(*SHAPE, seed=100 + i)
        out_ours = 0.3 * ours.scale_model_input(x_ours, t).numpy() + jitter
        out_theirs = 0.3 * theirs.scale_model_input(x_theirs, t_theirs) + _torch(jitter)
        step_noise["now"] = _normal(*SHAPE, seed=200 + i)
        x_ours = ours.step(out_ours, t, x_ours, noise=step_noise["now"])
        x_theirs = theirs.step(out_theirs, t_theirs, x_theirs).prev_sample
        _assert_close(x_ours, x_theirs.numpy(), f"step {i} (t={t})")


def test_euler_ancestral_adds_the_noise_of_its_seed_and_step():
    sampler = EulerAncestralSampler(NoiseSchedule())
    sampler.set_timesteps(4)
    x, out = _normal(*SHAPE, seed=1), 0.1 * _normal(*SHAPE, seed=2)
    t, step_index = sampler.timesteps[1], 1
    seeded = sampler.step(out, t, x, seed=3)
    sampler.set_timesteps(4)
    explicit = sampler.step(out, t, x, noise=draw_noise(SHAPE, 3, step_index))
    np.testing.assert_array_equal(seeded, explicit)
    sampler.set_timesteps(4)
    other_seed = sampler.step(out, t, x, seed=4)
    assert np.abs(seeded - other_seed).max() > 1e-2
    # Without the noise term the step would be an Euler step to sigma_down (< sigma_next).
    euler = EulerSampler(NoiseSchedule())
    euler.set_timesteps(4)
    assert np.abs(seeded - euler.step(out, t, x)).max() > 1e-2


def test_euler_ancestral_last_step_adds_no_noise():
    sampler = EulerAncestralSampler(NoiseSchedule())
    sampler.set_timesteps(3)
    x, out = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    t = sampler.timesteps[-1]
    sampler._last_index = 1
    a = sampler.step(out, t, x, seed=1)
    sampler._last_index = 1
    b = sampler.step(out, t, x, seed=2)
    np.testing.assert_array_equal(a, b)  # sigma_next = 0: sigma_up = 0, the clean estimate itself


def test_euler_ancestral_refuses_flow_models():
    with pytest.raises(ValueError, match="'euler-a' sampler needs a diffusion.*Use the 'euler' sampler"):
        EulerAncestralSampler(NoiseSchedule(prediction_type="flow"))


# --------------------------------------------------------------------------- DPM++ 2M Karras


def test_karras_sigmas_are_evenly_spaced_in_sigma_to_the_one_over_rho():
    schedule = NoiseSchedule()
    sigmas = karras_sigmas(schedule, 12)
    np.testing.assert_allclose(sigmas[[0, -1]], schedule.sigmas[[-1, 0]], rtol=1e-12)
    steps = np.diff(sigmas ** (1 / 7))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert steps[0] < 0


@pytest.mark.parity
def test_dpm_karras_timesteps_and_sigmas_match_diffusers():
    for n in (1, 5, 10, 25, 50, 100):
        ours, theirs = _dpm_karras_pair()
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy(), err_msg=f"{n} steps")
        np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=SIGMA_RTOL, err_msg=f"{n} steps")
        assert ours.init_noise_sigma == float(theirs.init_noise_sigma) == 1.0


@pytest.mark.parity
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [10, 50])  # 50 steps repeat timesteps 1 near the end
def test_dpm_karras_steps_match_diffusers(prediction_type, steps):
    ours, theirs = _dpm_karras_pair(prediction_type)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    x = _normal(*SHAPE, seed=5)
    x_ours, x_theirs = x, _torch(x)
    for i, (t, t_theirs) in enumerate(zip(ours.timesteps, theirs.timesteps)):
        jitter = _normal(*SHAPE, seed=100 + i)
        out_ours = 0.3 * x_ours + jitter
        out_theirs = 0.3 * x_theirs + _torch(jitter)
        x_ours = ours.step(out_ours, t, x_ours)
        x_theirs = theirs.step(out_theirs, t_theirs, x_theirs).prev_sample
        _assert_close(x_ours, x_theirs.numpy(), f"step {i} (t={t})")


@pytest.mark.parity
@pytest.mark.parametrize("steps,strength", [(10, 0.75), (25, 0.3)])
def test_dpm_karras_image_to_image_start_matches_diffusers(steps, strength):
    from types import SimpleNamespace

    from diffusers import StableDiffusionImg2ImgPipeline

    ours, theirs = _dpm_karras_pair()
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    expected, kept = StableDiffusionImg2ImgPipeline.get_timesteps(
        SimpleNamespace(scheduler=theirs), steps, strength, "cpu"
    )
    timesteps, start_sample = ours.timesteps_for_strength(strength)
    assert len(timesteps) == kept
    np.testing.assert_array_equal(timesteps, expected.numpy())
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    start = theirs.add_noise(_torch(x0), _torch(noise), expected[:1].repeat(SHAPE[0])).numpy()
    _assert_close(start_sample(x0, noise), start, "start sample")


def test_dpm_karras_is_dpm_solver_on_karras_sigmas():
    sampler = get_sampler("dpm++-karras", NoiseSchedule())
    assert type(sampler) is DPMSolverSampler and sampler.use_karras_sigmas
    sampler.set_timesteps(8)
    np.testing.assert_allclose(sampler.sigmas[:-1], karras_sigmas(sampler.schedule, 8))
    assert sampler.sigmas[-1] == 0.0
    plain = DPMSolverSampler(NoiseSchedule())
    plain.set_timesteps(8)
    assert not np.allclose(plain.sigmas, sampler.sigmas)


def test_dpm_karras_refuses_a_timestep_spacing_it_would_not_use():
    with pytest.raises(ValueError, match="timestep_spacing: Karras sigmas place the timesteps themselves; "
                                         "expected the default 'leading', found 'trailing'"):
        get_sampler("dpm++-karras", NoiseSchedule(), timestep_spacing="trailing")


def test_samplers_on_a_graph_loop_draw_the_same_seeded_noise():
    sampler = EulerAncestralSampler(NoiseSchedule())
    sampler.set_timesteps(3)
    timesteps = sampler.timesteps

    def loop(x):
        for t in timesteps:
            x = sampler.step(0.1 * sampler.scale_model_input(x, t), t, x, seed=9)
        return x

    x = tf.constant(_normal(*SHAPE))
    np.testing.assert_allclose(tf.function(loop)(x), loop(x), rtol=1e-5, atol=1e-5)
