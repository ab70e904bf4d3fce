"""Processors: LeRobot's standard steps under their standard names, plus the optional square resize."""

import torch
from conftest import tiny_config
from lerobot.processor import ProcessorStepRegistry

from lerobot_policy_act_rtc_alldelays import make_act_relative_rtc_alldelays_pre_post_processors
from lerobot_policy_act_rtc_alldelays.image_resize import (
    PadToSquareResizeProcessorStep,
    pad_to_square_and_resize,
)


def _step_names(pipeline):
    return [step._registry_name for step in pipeline.steps]


def test_standard_step_names_without_resize():
    pre, post = make_act_relative_rtc_alldelays_pre_post_processors(tiny_config())
    assert _step_names(pre) == [
        "rename_observations_processor",
        "to_batch_processor",
        "device_processor",
        "normalizer_processor",
    ]
    assert _step_names(post) == ["unnormalizer_processor", "device_processor"]


def test_resize_step_is_added_before_normalization_under_its_own_name():
    pre, _ = make_act_relative_rtc_alldelays_pre_post_processors(tiny_config(downscale_img_square=32))
    assert _step_names(pre)[3] == "act_relative_rtc_alldelays_pad_square_resize"
    assert (
        ProcessorStepRegistry.get("act_relative_rtc_alldelays_pad_square_resize")
        is PadToSquareResizeProcessorStep
    )


def test_pad_to_square_keeps_the_aspect_ratio_and_centres_the_image():
    image = torch.ones(2, 3, 4, 8)
    square = pad_to_square_and_resize(image, 8)
    assert square.shape == (2, 3, 8, 8)
    assert torch.all(square[..., 2:6, :] == 1)
    assert torch.all(square[..., :2, :] == 0) and torch.all(square[..., 6:, :] == 0)


def test_resize_output_has_the_requested_side():
    assert pad_to_square_and_resize(torch.rand(3, 480, 640), 224).shape == (3, 224, 224)


def test_preprocessor_resizes_camera_images_and_leaves_state_raw():
    config = tiny_config(downscale_img_square=32)
    stats = {"observation.images.wrist": {"mean": torch.zeros(3, 1, 1), "std": torch.ones(3, 1, 1)}}
    pre, _ = make_act_relative_rtc_alldelays_pre_post_processors(config, dataset_stats=stats)
    state = torch.randn(4)
    out = pre({"observation.images.wrist": torch.rand(3, 48, 64), "observation.state": state})
    assert out["observation.images.wrist"].shape == (1, 3, 32, 32)
    assert torch.equal(out["observation.state"][0], state)


def test_resize_step_serializes_its_config(tmp_path):
    pre, _ = make_act_relative_rtc_alldelays_pre_post_processors(tiny_config(downscale_img_square=32))
    pre.save_pretrained(tmp_path)
    reloaded = type(pre).from_pretrained(tmp_path, config_filename="policy_preprocessor.json")
    step = reloaded.steps[3]
    assert isinstance(step, PadToSquareResizeProcessorStep)
    assert (step.size, step.image_keys) == (32, ["observation.images.wrist"])
