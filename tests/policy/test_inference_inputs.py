"""What reaches a robot: observations with NaN or inf, on another device, or as integer images are refused
with errors that name the input and the fix; floating observations and prefixes of any dtype give the
prediction of the policy's dtype; `select_action` refuses a mode or delay set after construction that the
config rejects."""

import pytest
import torch
from conftest import IMAGE_KEY, STATE_DIM, STATE_KEY, make_batch, make_policy
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import OBS_ENV_STATE

from lerobot_policy_act_rtc_alldelays.inference_inputs import model_observation

HALF_DTYPES = [torch.float16, torch.bfloat16]


def _policy_with_env_state(**overrides):
    features = {
        STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
        IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 64, 64)),
        OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(3,)),
    }
    return make_policy(input_features=features, **overrides)


def _observation(policy, batch_size=3):
    return {k: v for k, v in make_batch(policy.config, batch_size=batch_size).items() if k.startswith("obs")}


def _close_within(dtype):
    """assert_close tolerances of a few units of `dtype`'s precision (its inputs were rounded to it)."""
    eps = torch.finfo(dtype).eps
    return {"rtol": 4 * eps, "atol": 4 * eps}


# ---- non-finite values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", [STATE_KEY, IMAGE_KEY, OBS_ENV_STATE])
def test_a_non_finite_observation_is_refused_naming_the_input_and_batch_rows(key, value):
    policy = _policy_with_env_state()
    observation = _observation(policy)
    observation[key] = observation[key].clone()
    observation[key][1].view(-1)[0] = value
    observation[key][2].view(-1)[-1] = value
    with pytest.raises(ValueError, match=rf"NaN or inf values: '{key}' in batch rows \[1, 2\]\."):
        policy.predict_action_chunk(observation)


def test_every_non_finite_input_is_named():
    policy = _policy_with_env_state()
    observation = _observation(policy)
    observation[STATE_KEY] = observation[STATE_KEY].clone()
    observation[STATE_KEY][0, 0] = float("nan")
    observation[IMAGE_KEY] = observation[IMAGE_KEY].clone()
    observation[IMAGE_KEY][2, 0, 0, 0] = float("inf")
    with pytest.raises(
        ValueError, match=rf"'{IMAGE_KEY}' in batch rows \[2\]; '{STATE_KEY}' in batch rows \[0\]"
    ):
        policy.predict_action_chunk(observation)


def test_select_action_and_the_runtime_call_refuse_a_non_finite_observation():
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    observation[STATE_KEY] = observation[STATE_KEY].clone()
    observation[STATE_KEY][0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.select_action(observation)
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.predict_action_chunk(observation, inference_delay=2, prev_chunk_left_over=torch.randn(5, 4))


def test_finite_values_whose_sum_overflows_are_not_refused():
    """The fast check sums each input; finite values can overflow that sum without being refused."""
    policy = make_policy()
    observation = _observation(policy)
    observation[STATE_KEY] = torch.full_like(observation[STATE_KEY], 3e38)
    checked = model_observation(policy.config, observation, policy.model.action_head.weight)
    assert torch.equal(checked[STATE_KEY], observation[STATE_KEY])


def test_values_that_overflow_the_policys_dtype_are_named_as_such():
    policy = make_policy()
    observation = _observation(policy)
    observation[STATE_KEY] = observation[STATE_KEY].double()
    observation[STATE_KEY][0, 0] = 1e300
    with pytest.raises(
        ValueError, match=r"rows \[0\] \(finite torch.float64 values that overflow the policy's"
    ):
        policy.predict_action_chunk(observation)


# ---- dtypes ---------------------------------------------------------------------------------------------
def test_a_float64_observation_gives_the_float32_prediction():
    policy = _policy_with_env_state()
    observation = _observation(policy)
    expected = policy.predict_action_chunk(observation)
    chunk = policy.predict_action_chunk({k: v.double() for k, v in observation.items()})
    assert chunk.dtype == torch.float32
    assert torch.equal(chunk, expected)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_a_half_precision_observation_gives_the_float32_prediction_within_its_precision(dtype):
    policy = _policy_with_env_state()
    observation = _observation(policy)
    half = {k: v.to(dtype) for k, v in observation.items()}
    chunk = policy.predict_action_chunk(half)
    # Exactly the prediction from the same (rounded) values in float32 ...
    assert torch.equal(chunk, policy.predict_action_chunk({k: v.float() for k, v in half.items()}))
    # ... so within the half type's precision of the float32 prediction.
    torch.testing.assert_close(chunk, policy.predict_action_chunk(observation), **_close_within(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, *HALF_DTYPES], ids=str)
def test_an_action_prefix_of_any_float_dtype_is_cast_to_the_policys(dtype):
    policy = make_policy()
    observation = _observation(policy)
    prefix = torch.randn(3, 2, 4) + observation[STATE_KEY][:, None]
    chunk = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix.to(dtype))
    expected = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix.to(dtype).float())
    assert torch.equal(chunk, expected)
    torch.testing.assert_close(
        chunk, policy.predict_action_chunk(observation, delay=2, action_prefix=prefix), **_close_within(dtype)
    )


def test_a_bfloat16_policy_takes_a_float32_observation_and_prefix():
    policy = make_policy().to(torch.bfloat16)
    observation = _observation(policy)
    prefix = torch.randn(3, 2, 4)
    chunk = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix)
    half = {k: v.bfloat16() for k, v in observation.items()}
    assert chunk.dtype == torch.bfloat16
    assert torch.equal(chunk, policy.predict_action_chunk(half, delay=2, action_prefix=prefix.bfloat16()))


def test_integer_images_are_refused_with_how_to_normalize_them():
    policy = make_policy()
    observation = _observation(policy)
    observation[IMAGE_KEY] = (observation[IMAGE_KEY] * 255).to(torch.uint8)
    with pytest.raises(
        ValueError,
        match=rf"Camera image '{IMAGE_KEY}' has dtype torch.uint8.*`image.float\(\) / 255`.*preprocessor",
    ):
        policy.predict_action_chunk(observation)


def test_an_integer_state_is_refused_with_how_to_convert_it():
    policy = make_policy()
    observation = _observation(policy)
    observation[STATE_KEY] = observation[STATE_KEY].round().long()
    with pytest.raises(ValueError, match=rf"'{STATE_KEY}' has dtype torch.int64.*`.float\(\)`"):
        policy.predict_action_chunk(observation)


# ---- devices --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [STATE_KEY, IMAGE_KEY])
def test_an_observation_on_another_device_names_the_key_both_devices_and_the_fix(key):
    policy = make_policy()  # on cpu; a `meta` tensor is on another device, as a cuda one would be
    observation = _observation(policy)
    observation[key] = observation[key].to("meta")
    with pytest.raises(
        ValueError,
        match=rf"'{key}' is on device meta, but the policy is on cpu.*preprocessor.*device step.*"
        r"--policy.device.*policy.to\(",
    ):
        policy.predict_action_chunk(observation)


def test_an_observation_that_is_not_a_tensor_is_refused():
    policy = make_policy()
    observation = _observation(policy)
    observation[STATE_KEY] = observation[STATE_KEY].numpy()
    with pytest.raises(ValueError, match=rf"must be torch tensors, got \{{'{STATE_KEY}': 'ndarray'\}}"):
        policy.predict_action_chunk(observation)


# ---- settings changed after construction ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "delay", "message"),
    [
        ("prefix", 6, r"must be in 0..n_action_steps-1 \(0..3\)"),
        ("prefix", 3, r"`rtc_inference_delay` \(3\) exceeds `rtc_max_delay` \(2\)"),
        ("discard", 3, "In discard mode a chunk must hold"),
        ("plain", 0, "`rtc_inference_mode` must be one of"),
    ],
)
def test_select_action_refuses_a_setting_made_after_construction_that_the_config_rejects(
    mode, delay, message
):
    policy = make_policy(chunk_size=6, n_action_steps=4, rtc_max_delay=2)
    policy.config.rtc_inference_mode, policy.config.rtc_inference_delay = mode, delay
    with pytest.raises(
        ValueError, match=rf"rtc_inference_mode='{mode}' and rtc_inference_delay={delay}: .*{message}"
    ):
        policy.select_action(_observation(policy))


def test_a_setting_broken_mid_episode_is_refused_before_the_next_chunk():
    policy = make_policy(chunk_size=5, n_action_steps=4, rtc_max_delay=3, rtc_inference_delay=2)
    observation = _observation(policy)
    policy.select_action(observation)  # the first chunk: 4 actions queued, 3 left
    policy.config.rtc_inference_delay = 6
    for _ in range(3):  # the queued actions still execute
        policy.select_action(observation)
    with pytest.raises(ValueError, match="rtc_inference_delay=6"):
        policy.select_action(observation)


@pytest.mark.parametrize("set_it", ["set_inference_setting", "assignment"])
def test_a_valid_setting_made_after_construction_is_used(set_it):
    policy = make_policy(chunk_size=5, n_action_steps=4, rtc_max_delay=3)
    if set_it == "set_inference_setting":
        policy.config.set_inference_setting("prefix", 2)
    else:
        policy.config.rtc_inference_delay = 2
    delays = []
    predict = policy.predict_action_chunk
    policy.predict_action_chunk = lambda batch, delay=0, action_prefix=None: (
        delays.append(delay) or predict(batch, delay=delay, action_prefix=action_prefix)
    )
    observation = _observation(policy)
    for _ in range(7):
        policy.select_action(observation)
    assert delays == [0, 2, 2]
