"""What a user touches: a camera image in another layout or size, a damaged or incomplete checkpoint, a
non-integer inference delay and a mode or delay set after construction are refused with errors that say what
was wrong, what was expected and how to fix it."""

import json
import re
import shutil

import pytest
import torch
from conftest import IMAGE_KEY, IMAGE_SIZE, STATE_DIM, STATE_KEY, make_batch, make_policy, tiny_dataset_config
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_policy as lerobot_make_policy
from safetensors.torch import load_file, save_file

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.processor_act_relative_rtc_alldelays import (
    make_act_relative_rtc_alldelays_pre_post_processors,
)


def _observation(policy) -> dict[str, torch.Tensor]:
    return {k: v for k, v in make_batch(policy.config, batch_size=1).items() if k.startswith("observation.")}


# ---- camera images -------------------------------------------------------------------------------------
def test_a_channels_last_image_is_refused_naming_the_key_its_shape_and_the_layout_expected():
    policy = make_policy()
    observation = _observation(policy)
    observation[IMAGE_KEY] = observation[IMAGE_KEY].permute(0, 2, 3, 1)  # [1, H, W, 3]
    with pytest.raises(
        ValueError,
        match=rf"Camera image '{IMAGE_KEY}' has shape \(1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3\), but the policy "
        rf"reads channels-first images \[B, 3, H, W\] = \[1, 3, {IMAGE_SIZE}, {IMAGE_SIZE}\]\. Permute .* "
        r"`image.permute\(0, 3, 1, 2\)`",
    ):
        policy.predict_action_chunk(observation)


def test_an_image_of_another_size_is_refused_naming_both_sizes_and_the_fix():
    policy = make_policy()  # built for 64 px images, without `downscale_img_square`
    observation = _observation(policy)
    observation[IMAGE_KEY] = torch.rand(1, 3, 32, 32)
    with pytest.raises(
        ValueError,
        match=rf"'{IMAGE_KEY}' is 32x32 pixels \(height x width\), but this policy was built for "
        rf"{IMAGE_SIZE}x{IMAGE_SIZE} images.*Set the camera's resolution to {IMAGE_SIZE}x{IMAGE_SIZE}, or "
        r"train the policy with `--policy.downscale_img_square",
    ):
        policy.predict_action_chunk(observation)


def test_with_downscale_img_square_the_preprocessor_takes_a_camera_of_any_size():
    policy = make_policy(downscale_img_square=32)  # the feature says 64 px; the model reads 32 px squares
    stats = {IMAGE_KEY: {"mean": torch.zeros(3, 1, 1), "std": torch.ones(3, 1, 1)}}
    preprocessor, _ = make_act_relative_rtc_alldelays_pre_post_processors(policy.config, dataset_stats=stats)
    observation = preprocessor({IMAGE_KEY: torch.rand(3, 48, 80), STATE_KEY: torch.randn(STATE_DIM)})
    chunk = policy.predict_action_chunk(observation)
    assert chunk.shape == (1, policy.config.chunk_size, STATE_DIM)


def test_with_downscale_img_square_an_image_that_skipped_the_preprocessor_is_refused():
    policy = make_policy(downscale_img_square=32)
    observation = _observation(policy)  # 64 px, the feature's size, not resized
    with pytest.raises(
        ValueError,
        match=rf"'{IMAGE_KEY}' is 64x64 pixels \(height x width\), but this policy reads 32x32 images: its "
        r"preprocessor pads and resizes .* Pass the observation through the policy's preprocessor\.",
    ):
        policy.predict_action_chunk(observation)


# ---- checkpoints ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(synthetic_dataset, tmp_path_factory):
    """A checkpoint of the tiny policy trained on the synthetic dataset (so `make_policy` can reload it)."""
    path = tmp_path_factory.mktemp("checkpoint")
    config = tiny_dataset_config(chunk_size=4, n_action_steps=4, rtc_max_delay=2)
    lerobot_make_policy(config, ds_meta=synthetic_dataset.meta).save_pretrained(path)
    return path


def _load(loader: str, path, dataset_meta):
    if loader == "from_pretrained":
        return ACTRelativeRTCAllDelaysPolicy.from_pretrained(path)
    # What lerobot-train does for `--policy.path`: make_policy with the checkpoint's config and path.
    config = PreTrainedConfig.from_pretrained(path)
    config.pretrained_path = path
    return lerobot_make_policy(config, ds_meta=dataset_meta)


def _damage(data: bytes, damage: str) -> bytes:
    header_length = int.from_bytes(data[:8], "little")
    if damage == "truncated":
        return data[: len(data) // 2]
    if damage == "emptied":
        return b""
    return data[:8] + b"[" * header_length + data[8 + header_length :]  # a header that is not JSON


@pytest.mark.parametrize("loader", ["from_pretrained", "make_policy"])
@pytest.mark.parametrize("damage", ["truncated", "emptied", "broken header"])
def test_a_damaged_weights_file_is_refused_naming_the_file_and_what_to_do(
    checkpoint, synthetic_dataset, tmp_path, damage, loader
):
    shutil.copytree(checkpoint, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(_damage(weights.read_bytes(), damage))
    with pytest.raises(
        ValueError,
        match=rf"The weights file '{re.escape(str(weights))}' is truncated or corrupt \(.*\), so the policy "
        r"cannot be loaded from it\. Download the checkpoint again .* or save the policy again",
    ):
        _load(loader, tmp_path, synthetic_dataset.meta)


@pytest.mark.parametrize("loader", ["from_pretrained", "make_policy"])
def test_a_checkpoint_lacking_weights_of_the_policy_is_refused_naming_them(
    checkpoint, synthetic_dataset, tmp_path, loader
):
    shutil.copytree(checkpoint, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    del state["model.action_head.weight"], state["model.action_head.bias"]
    save_file(state, weights)
    with pytest.raises(
        ValueError,
        match=rf"The checkpoint '{re.escape(str(weights))}' lacks 2 weights of this policy: "
        r"model.action_head.bias, model.action_head.weight\. The policy would predict with their random",
    ):
        _load(loader, tmp_path, synthetic_dataset.meta)


def test_a_checkpoint_saved_before_the_state_token_still_loads(tmp_path):
    """A 0.2.0 checkpoint: its config lacks the fields added with the state token, so it loads with their
    defaults (state token on, prefix dropout 0.5), and its weights lack the state token, the state statistics
    and the prefix mask token. It loads without the state token and predicts as it was saved."""
    old = make_policy(use_state_token=False, rtc_prefix_dropout=0.0).eval()
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for field in ("use_state_token", "rtc_prefix_dropout", "rtc_prefix_noise_std", "rtc_delays_per_sample"):
        del config[field]
    (tmp_path / "config.json").write_text(json.dumps(config))
    stored = load_file(tmp_path / "model.safetensors")
    assert not any(name.startswith(("state_normalizer", "model.prefix_mask")) for name in stored)

    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path)

    observation = _observation(old)
    assert (loaded.config.use_state_token, loaded.config.rtc_prefix_dropout) == (False, 0.5)
    assert torch.equal(loaded.predict_action_chunk(observation), old.predict_action_chunk(observation))


# ---- inference mode and delay --------------------------------------------------------------------------
@pytest.mark.parametrize("when", ["construction", "set after construction"])
@pytest.mark.parametrize("mode", ["prefix", "discard"])
@pytest.mark.parametrize(
    ("delay", "message"),
    [(2.0, r"got 2\.0 \(float\)\. Pass 2\."), (2.5, r"got 2\.5 \(float\)\.(?! Pass)")],
    ids=["2.0", "2.5"],
)
def test_a_non_integer_inference_delay_is_refused_by_the_config_in_every_mode(mode, delay, message, when):
    expected = rf"`rtc_inference_delay` counts control steps and must be an integer, {message}"
    fields = dict(chunk_size=8, n_action_steps=4, rtc_max_delay=3, rtc_inference_mode=mode)
    if when == "construction":
        with pytest.raises(ValueError, match=expected):
            make_policy(**fields, rtc_inference_delay=delay)
        return
    policy = make_policy(**fields)
    policy.config.rtc_inference_delay = delay
    with pytest.raises(ValueError, match=expected):
        policy.select_action(_observation(policy))


def test_a_rejected_setting_made_after_construction_points_to_set_inference_setting():
    policy = make_policy(chunk_size=6, n_action_steps=4, rtc_max_delay=2)
    policy.config.rtc_inference_mode, policy.config.rtc_inference_delay = "prefix", 3
    with pytest.raises(
        ValueError,
        match=r"`rtc_inference_delay` \(3\) exceeds `rtc_max_delay` \(2\).* Set both together with "
        r"`policy.config.set_inference_setting\(mode, delay\)`, which checks them when they are set\.",
    ):
        policy.select_action(_observation(policy))


def test_set_inference_setting_refuses_a_rejected_pair_and_leaves_the_config_unchanged():
    policy = make_policy(chunk_size=6, n_action_steps=4, rtc_max_delay=2, rtc_inference_delay=1)
    with pytest.raises(
        ValueError,
        match=r"Cannot set rtc_inference_mode='discard' and rtc_inference_delay=3: In discard mode a chunk",
    ):
        policy.config.set_inference_setting("discard", 3)
    assert (policy.config.rtc_inference_mode, policy.config.rtc_inference_delay) == ("prefix", 1)
