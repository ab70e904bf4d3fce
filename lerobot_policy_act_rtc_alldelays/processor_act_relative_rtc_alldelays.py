"""Pre- and post-processors of `act_relative_rtc_alldelays`: LeRobot's standard steps under their standard
names (lerobot-train and lerobot-eval override them by name), plus the optional image resize."""

from typing import Any

import torch
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

from .configuration_act_relative_rtc import ACTRelativeRTCConfig
from .image_resize import PadToSquareResizeProcessorStep

# The same names as lerobot.utils.constants.POLICY_{PRE,POST}PROCESSOR_DEFAULT_NAME (stable across releases).
PREPROCESSOR_NAME = "policy_preprocessor"
POSTPROCESSOR_NAME = "policy_postprocessor"


def make_act_relative_rtc_alldelays_pre_post_processors(
    config: ACTRelativeRTCConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Builds the pipelines. With relative actions, STATE and ACTION pass through unnormalized: the model
    normalizes `action - state` itself with statistics stored in its weights."""
    input_steps = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        DeviceProcessorStep(device=config.device),
    ]
    if config.downscale_img_square is not None:
        input_steps.append(
            PadToSquareResizeProcessorStep(
                image_keys=list(config.image_features), size=config.downscale_img_square
            )
        )
    input_steps.append(
        NormalizerProcessorStep(
            features={**config.input_features, **config.output_features},
            norm_map=config.normalization_mapping,
            stats=dataset_stats,
            device=config.device,
        )
    )
    output_steps = [
        UnnormalizerProcessorStep(
            features=config.output_features, norm_map=config.normalization_mapping, stats=dataset_stats
        ),
        DeviceProcessorStep(device="cpu"),
    ]
    return (
        PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=input_steps, name=PREPROCESSOR_NAME),
        PolicyProcessorPipeline[PolicyAction, PolicyAction](
            steps=output_steps,
            name=POSTPROCESSOR_NAME,
            to_transition=policy_action_to_transition,
            to_output=transition_to_policy_action,
        ),
    )
