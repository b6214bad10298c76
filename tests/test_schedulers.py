"""Noise schedule and samplers: behaviour on their own, and parity with diffusers 0.42 / keras-cv 0.9."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from kerasemote.config import SD_V1, TINY
from kerasemote.schedulers import (
    SAMPLERS,
    DDIMSampler,
    DPMSolverSampler,
    EulerAncestralSampler,
    EulerSampler,
    NoiseSchedule,
    get_sampler,
    spaced_timesteps,
)

SHAPE = (2, 4, 4, 3)  # (B, H, W, C)
STEP_COUNTS = (1, 7, 10, 25, 50)
SPACINGS = ("leading", "linspace", "trailing")
SD_KWARGS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
KERAS_CV_DDIM = dict(timestep_spacing="linspace", set_alpha_to_one=True, prev_timestep="sequence")
# Samplers compared here with diffusers' scheduler of the same defaults; euler-a and dpm++-karras have
# their own file (tests/test_schedulers_community.py), ddim-kerascv is keras-cv's rule.
DIFFUSERS_TWINS = ("ddim", "euler", "dpm++")


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- schedule


def test_from_config_reads_the_schedule_fields():
    config = TINY.replace(prediction_type="v_prediction", beta_schedule="linear", num_train_timesteps=500)
    schedule = NoiseSchedule.from_config(config)
    assert schedule.prediction_type == "v_prediction"
    assert schedule.alphas_cumprod.shape == (500,)
    assert schedule.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(schedule.betas, np.linspace(0.00085, 0.012, 500))


def test_scaled_linear_betas_are_linear_in_sqrt_beta():
    betas = NoiseSchedule.from_config(SD_V1).betas
    np.testing.assert_allclose(betas[[0, -1]], [0.00085, 0.012])
    np.testing.assert_allclose(np.diff(np.sqrt(betas)), np.diff(np.sqrt(betas))[0], rtol=1e-9)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
def test_model_output_conversions_invert_add_noise(prediction_type):
    schedule = NoiseSchedule(prediction_type=prediction_type)
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    timesteps = tf.constant([37, 901])
    x_t = schedule.add_noise(x0, noise, timesteps)
    target = schedule.training_target(x0, noise, timesteps)
    np.testing.assert_allclose(schedule.predict_x0(target, x_t, timesteps), x0, atol=2e-4)
    np.testing.assert_allclose(schedule.predict_epsilon(target, x_t, timesteps), noise, atol=2e-4)


def test_v_prediction_target_is_alpha_noise_minus_sigma_x0():
    schedule = NoiseSchedule(prediction_type="v_prediction")
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    a = schedule.alphas_cumprod[[10, 700]].reshape(2, 1, 1, 1)
    expected = np.sqrt(a) * noise - np.sqrt(1 - a) * x0
    np.testing.assert_allclose(schedule.training_target(x0, noise, [10, 700]), expected, atol=1e-6)


def test_flow_interpolates_linearly_and_targets_noise_minus_x0():
    schedule = NoiseSchedule(prediction_type="flow")
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    x_t = schedule.add_noise(x0, noise, tf.constant([250.0, 1000.0]))
    np.testing.assert_allclose(x_t[0], 0.75 * x0[0] + 0.25 * noise[0], atol=1e-6)
    np.testing.assert_allclose(x_t[1], noise[1], atol=1e-6)
    np.testing.assert_allclose(schedule.training_target(x0, noise, [1, 2]), noise - x0, atol=1e-6)


def test_snr_is_alpha_bar_over_one_minus_alpha_bar():
    schedule = NoiseSchedule()
    a = schedule.alphas_cumprod[[0, 499, 999]]
    np.testing.assert_allclose(schedule.snr([0, 499, 999]), a / (1 - a), rtol=1e-5)


def test_float16_inputs_are_computed_and_returned_in_float32():
    schedule = NoiseSchedule()
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    noisy = schedule.add_noise(x0.astype(np.float16), noise.astype(np.float16), [5, 6])
    assert noisy.dtype == tf.float32
    np.testing.assert_allclose(noisy, schedule.add_noise(x0, noise, [5, 6]), atol=5e-3)


def test_float_timesteps_are_rejected_for_diffusion_schedules():
    with pytest.raises(ValueError, match="integers.*float32"):
        NoiseSchedule().add_noise(np.zeros(SHAPE), np.zeros(SHAPE), tf.constant([1.0, 2.0]))


def test_trailing_spacing_has_exactly_the_requested_number_of_steps():
    # diffusers' float arange returns 62 values (ending at -1) here.
    steps = spaced_timesteps(61, 1000, "trailing")
    assert len(steps) == 61 and steps[0] == 999 and steps.min() >= 0


def test_leading_spacing_past_the_schedule_end_is_an_error():
    with pytest.raises(ValueError, match="steps_offset=1"):
        spaced_timesteps(1000, 1000, "leading", steps_offset=1)


# --------------------------------------------------------------------------- samplers


def test_get_sampler_builds_every_named_sampler():
    schedule = NoiseSchedule()
    kinds = {name: type(get_sampler(name, schedule)) for name in SAMPLERS}
    assert kinds == {"ddim": DDIMSampler, "ddim-kerascv": DDIMSampler, "euler": EulerSampler,
                     "euler-a": EulerAncestralSampler, "dpm++": DPMSolverSampler, "dpm++-karras": DPMSolverSampler}
    with pytest.raises(ValueError, match="dpm\\+\\+"):
        get_sampler("plms", schedule)


@pytest.mark.parametrize("name", ["ddim", "ddim-kerascv", "euler-a", "dpm++", "dpm++-karras"])
def test_diffusion_only_samplers_reject_flow_and_point_to_euler(name):
    with pytest.raises(ValueError, match="'euler'"):
        get_sampler(name, NoiseSchedule(prediction_type="flow"))


@pytest.mark.parametrize("steps", [1, 4])
def test_flow_euler_with_perfect_velocity_recovers_x0(steps):
    sampler = EulerSampler(NoiseSchedule(prediction_type="flow"))
    sampler.set_timesteps(steps)
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    x = noise * sampler.init_noise_sigma
    assert sampler.timesteps[0] == 1000
    for t in sampler.timesteps:
        x = sampler.step(noise - x0, t, sampler.scale_model_input(x, t))
    np.testing.assert_allclose(x, x0, atol=1e-5)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_samplers_with_an_exact_model_recover_x0(name, prediction_type):
    schedule = NoiseSchedule(prediction_type=prediction_type)
    # A final alpha of 1 makes DDIM land on x0 itself.
    kwargs = {"set_alpha_to_one": True} if name == "ddim" else {}
    sampler = get_sampler(name, schedule, **kwargs)
    sampler.set_timesteps(8)
    x0, noise = 0.5 * _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    x = noise * sampler.init_noise_sigma
    for t in sampler.timesteps:
        x_t = sampler.scale_model_input(x, t)
        alpha, sigma = schedule.alpha_sigma(tf.constant(int(round(t))))
        true_noise = (x_t - alpha * x0) / sigma
        out = true_noise if prediction_type == "epsilon" else alpha * true_noise - sigma * x0
        x = sampler.step(out, t, x)
    np.testing.assert_allclose(x, x0, atol=2e-3)


def test_ddim_eta_noise_is_reproducible_from_an_int_seed():
    def run(seed):
        sampler = DDIMSampler(NoiseSchedule(), eta=1.0)
        sampler.set_timesteps(5)
        x = tf.constant(_normal(*SHAPE))
        for t in sampler.timesteps:
            x = sampler.step(0.1 * x, t, x, seed=seed)
        return x.numpy()

    np.testing.assert_array_equal(run(3), run(3))
    assert np.abs(run(3) - run(4)).max() > 1e-2


def test_step_rejects_a_timestep_outside_the_schedule():
    sampler = DDIMSampler(NoiseSchedule())
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep 5 is not one of DDIMSampler.timesteps"):
        sampler.step(np.zeros(SHAPE), 5, np.zeros(SHAPE))


def test_step_needs_set_timesteps_first():
    with pytest.raises(RuntimeError, match="set_timesteps"):
        EulerSampler(NoiseSchedule()).step(np.zeros(SHAPE), 999, np.zeros(SHAPE))


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_python_unrolled_loop_traces_under_tf_function(name):
    sampler = get_sampler(name, NoiseSchedule())
    sampler.set_timesteps(3)
    timesteps = sampler.timesteps

    def loop(x):
        for t in timesteps:
            x = sampler.step(0.1 * sampler.scale_model_input(x, t), t, x, seed=0)  # euler-a: stateless noise
        return x

    x = tf.constant(_normal(*SHAPE))
    np.testing.assert_allclose(tf.function(loop)(x), loop(x), rtol=1e-5, atol=1e-5)


def test_float16_model_output_gives_float32_samples():
    sampler = EulerSampler(NoiseSchedule())
    sampler.set_timesteps(4)
    t = sampler.timesteps[0]
    x = _normal(*SHAPE)
    out = sampler.step(tf.constant(0.1 * x, tf.float16), t, tf.constant(x, tf.float16))
    assert out.dtype == tf.float32


@pytest.mark.parametrize("steps,strength,kept", [(10, 0.75, 7), (50, 0.3, 15), (10, 1.0, 10), (4, 0.5, 2)])
def test_strength_keeps_the_last_int_steps_times_strength_timesteps(steps, strength, kept):
    sampler = DDIMSampler(NoiseSchedule())
    sampler.set_timesteps(steps)
    timesteps, start_sample = sampler.timesteps_for_strength(strength)
    np.testing.assert_array_equal(timesteps, sampler.timesteps[steps - kept :])
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    expected = NoiseSchedule().add_noise(x0, noise, [timesteps[0]] * SHAPE[0])
    np.testing.assert_allclose(start_sample(x0, noise), expected, atol=1e-6)


def test_strength_that_keeps_no_step_is_an_error():
    sampler = EulerSampler(NoiseSchedule())
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="keeps 0 steps"):
        sampler.timesteps_for_strength(0.05)


def test_keras_cv_settings_reproduce_its_timesteps_and_final_alpha():
    sampler = DDIMSampler(NoiseSchedule(), **KERAS_CV_DDIM)
    for n in (1, 7, 50):
        sampler.set_timesteps(n)
        ratio = 999 / (n - 1) if n > 1 else 1000  # keras-cv 0.9 generate_image
        expected = (np.arange(n) * ratio).round().astype(np.int64)[::-1]
        np.testing.assert_array_equal(sampler.timesteps, expected)
    assert sampler.final_alpha_cumprod == 1.0


# --------------------------------------------------------------------------- parity with diffusers


def _diffusers():
    return pytest.importorskip("diffusers")


def _torch(x):
    import torch

    return torch.from_numpy(np.asarray(x, np.float32))


def _ours_and_theirs(name, spacing, prediction_type="epsilon", steps_offset=1, eta=0.0):
    diffusers = _diffusers()
    schedule = NoiseSchedule(prediction_type=prediction_type)
    common = dict(
        SD_KWARGS, prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=steps_offset
    )
    if name == "ddim":
        ours = DDIMSampler(schedule, eta=eta, timestep_spacing=spacing, steps_offset=steps_offset)
        theirs = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    elif name == "euler":
        ours = EulerSampler(schedule, timestep_spacing=spacing, steps_offset=steps_offset)
        theirs = diffusers.EulerDiscreteScheduler(**common)
    else:
        ours = DPMSolverSampler(schedule, timestep_spacing=spacing, steps_offset=steps_offset)
        theirs = diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True, **common
        )
    return ours, theirs


@pytest.mark.parity
@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "linear"])
def test_alphas_cumprod_match_diffusers(beta_schedule):
    diffusers = _diffusers()
    kwargs = dict(SD_KWARGS, beta_schedule=beta_schedule)
    theirs = diffusers.DDPMScheduler(**kwargs).alphas_cumprod.numpy()
    np.testing.assert_allclose(NoiseSchedule(**kwargs).alphas_cumprod, theirs, rtol=2e-6, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("name", DIFFUSERS_TWINS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_and_sigmas_match_diffusers(name, spacing):
    for n in STEP_COUNTS:
        for offset in (0, 1):
            ours, theirs = _ours_and_theirs(name, spacing, steps_offset=offset)
            ours.set_timesteps(n)
            theirs.set_timesteps(n)
            message = f"{n} steps, steps_offset={offset}"
            np.testing.assert_allclose(ours.timesteps, theirs.timesteps.numpy(), atol=1e-4, err_msg=message)
            if name != "ddim":
                np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=3e-5, err_msg=message)
                np.testing.assert_allclose(ours.init_noise_sigma, float(theirs.init_noise_sigma), rtol=3e-5)


@pytest.mark.parity
@pytest.mark.parametrize("name", DIFFUSERS_TWINS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing,steps", [("leading", 10), ("trailing", 7), ("linspace", 6)])
def test_short_sampling_loop_matches_diffusers(name, prediction_type, spacing, steps):
    ours, theirs = _ours_and_theirs(name, spacing, prediction_type)
    _compare_loops(ours, theirs, steps=steps)


@pytest.mark.parity
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_with_eta_matches_diffusers_given_the_same_noise(prediction_type):
    ours, theirs = _ours_and_theirs("ddim", "leading", prediction_type, eta=0.7)
    _compare_loops(ours, theirs, steps=10, eta=0.7)


def _compare_loops(ours, theirs, steps, eta=None):
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    noise = _normal(*SHAPE, seed=5)
    x_ours = noise * ours.init_noise_sigma
    x_theirs = _torch(noise) * theirs.init_noise_sigma
    for i, (t, t_theirs) in enumerate(zip(ours.timesteps, theirs.timesteps)):
        # A toy "model" that depends on its input, so that differences would propagate.
        jitter = _normal(*SHAPE, seed=100 + i)
        out_ours = 0.3 * ours.scale_model_input(x_ours, t).numpy() + jitter
        out_theirs = 0.3 * theirs.scale_model_input(x_theirs, t_theirs) + _torch(jitter)
        extra = {}
        if eta is not None:
            step_noise = _normal(*SHAPE, seed=200 + i)
            extra = {"eta": eta, "variance_noise": _torch(step_noise)}
            x_ours = ours.step(out_ours, t, x_ours, noise=step_noise)
        else:
            x_ours = ours.step(out_ours, t, x_ours)
        x_theirs = theirs.step(out_theirs, t_theirs, x_theirs, **extra).prev_sample
        scale = max(1.0, float(np.abs(x_theirs.numpy()).max()))
        np.testing.assert_allclose(x_ours, x_theirs.numpy(), atol=1e-4 * scale, err_msg=f"step {i} (t={t})")


@pytest.mark.parity
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_add_noise_and_velocity_match_diffusers(prediction_type):
    diffusers = _diffusers()
    import torch

    theirs = diffusers.DDPMScheduler(**SD_KWARGS)
    schedule = NoiseSchedule(prediction_type=prediction_type)
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    timesteps = np.array([3, 812])
    expected = theirs.add_noise(_torch(x0), _torch(noise), torch.from_numpy(timesteps)).numpy()
    np.testing.assert_allclose(schedule.add_noise(x0, noise, timesteps), expected, atol=1e-5)
    if prediction_type == "v_prediction":
        velocity = theirs.get_velocity(_torch(x0), _torch(noise), torch.from_numpy(timesteps)).numpy()
        np.testing.assert_allclose(schedule.training_target(x0, noise, timesteps), velocity, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("name", DIFFUSERS_TWINS)
@pytest.mark.parametrize("steps,strength", [(10, 0.75), (25, 0.3), (50, 0.5), (7, 1.0)])
def test_img2img_timesteps_and_start_sample_match_diffusers_pipeline(name, steps, strength):
    from diffusers import StableDiffusionImg2ImgPipeline

    ours, theirs = _ours_and_theirs(name, "leading")
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    fake_pipeline = SimpleNamespace(scheduler=theirs)
    expected, kept = StableDiffusionImg2ImgPipeline.get_timesteps(fake_pipeline, steps, strength, "cpu")
    timesteps, start_sample = ours.timesteps_for_strength(strength)
    assert len(timesteps) == kept
    np.testing.assert_allclose(timesteps, expected.numpy(), atol=1e-4)
    x0, noise = _normal(*SHAPE, seed=1), _normal(*SHAPE, seed=2)
    start = theirs.add_noise(_torch(x0), _torch(noise), expected[:1].repeat(SHAPE[0])).numpy()
    np.testing.assert_allclose(start_sample(x0, noise), start, atol=1e-4)


@pytest.mark.parity
def test_keras_cv_ddim_update_is_reproduced():
    pytest.importorskip("keras_cv")
    from keras_cv.src.models.stable_diffusion.constants import _ALPHAS_CUMPROD

    sampler = DDIMSampler(NoiseSchedule(), **KERAS_CV_DDIM)
    sampler.set_timesteps(6)
    ascending = sampler.timesteps[::-1]
    np.testing.assert_allclose(sampler.schedule.alphas_cumprod, _ALPHAS_CUMPROD, atol=1e-7)
    x = _normal(*SHAPE, seed=1).astype(np.float64)
    ours = tf.constant(x, tf.float32)
    for index in range(len(ascending) - 1, -1, -1):  # keras-cv walks its ascending list backwards
        eps = _normal(*SHAPE, seed=10 + index)
        a_t = _ALPHAS_CUMPROD[ascending[index]]
        a_prev = _ALPHAS_CUMPROD[ascending[index - 1]] if index > 0 else 1.0
        pred_x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        x = eps * np.sqrt(1 - a_prev) + np.sqrt(a_prev) * pred_x0
        ours = sampler.step(eps, ascending[index], ours)
    np.testing.assert_allclose(ours, x, atol=1e-4)
