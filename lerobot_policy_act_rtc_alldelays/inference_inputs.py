"""Checks of what reaches the policy at inference: the observation and the action prefix."""

import torch
from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE
from torch import Tensor

from .configuration_act_relative_rtc import ACTRelativeRTCConfig


def observation_batch_size(config: ACTRelativeRTCConfig, batch: dict[str, Tensor]) -> int:
    """Checks that the observation holds every input the model reads, batched alike; returns B."""
    required = {key: 4 for key in config.image_features}  # key -> ndim: cameras [B, C, H, W]
    if config.env_state_feature:
        required[OBS_ENV_STATE] = 2
    if config.predict_relative_actions:
        required[OBS_STATE] = 2
    missing = [key for key in required if batch.get(key) is None]
    if missing:
        raise ValueError(
            f"The observation lacks {missing}; this policy reads {list(required)}. Pass the observation "
            "through the policy's preprocessor, and map other camera names with `--rename_map`."
        )
    shapes = {key: tuple(batch[key].shape) for key in required}
    if any(len(shapes[key]) != ndim for key, ndim in required.items()):
        raise ValueError(
            "Observation tensors need a batch dimension (cameras [B, C, H, W], states [B, dim]), got "
            f"shapes {shapes}. Add it with `unsqueeze(0)`, as LeRobot's preprocessor does."
        )
    if config.predict_relative_actions:
        state_dim = config.robot_state_feature.shape[0]
        if shapes[OBS_STATE][1] != state_dim:
            raise ValueError(
                f"'{OBS_STATE}' has {shapes[OBS_STATE][1]} dimensions, this policy was trained with "
                f"{state_dim}."
            )
    batch_sizes = {shape[0] for shape in shapes.values()}
    if len(batch_sizes) != 1:
        raise ValueError(f"The observation tensors disagree on the batch size: {shapes}.")
    return batch_sizes.pop()


def check_action_prefix(
    config: ACTRelativeRTCConfig, delay: int, action_prefix: Tensor | None, batch_size: int
) -> None:
    """Refuses a delay outside the trained ones and a prefix that is not [B, delay, A] finite actions."""
    max_delay = config.rtc_max_delay
    if not 0 <= delay <= max_delay:
        raise ValueError(
            f"delay={delay} is outside the delays this policy was trained on (0..rtc_max_delay={max_delay})."
        )
    action_dim = config.action_feature.shape[0]
    if action_prefix is not None and action_prefix.ndim != 3:
        raise ValueError(
            f"action_prefix must be [batch, delay, action_dim] = [{batch_size}, {delay}, {action_dim}], "
            f"got shape {tuple(action_prefix.shape)}."
        )
    prefix_length = 0 if action_prefix is None else action_prefix.shape[1]
    if delay == 0 and prefix_length > 0:
        raise ValueError(
            f"An action_prefix of {prefix_length} actions was given with delay=0: pass "
            f"delay={prefix_length} (the number of actions that execute while inference runs)."
        )
    if delay > 0 and prefix_length != delay:
        got = None if action_prefix is None else tuple(action_prefix.shape)
        raise ValueError(
            f"delay={delay} needs an action_prefix of shape [batch, {delay}, action_dim] (the actions "
            f"that execute while inference runs), got {got}."
        )
    if delay == 0:
        return
    if action_prefix.shape[0] != batch_size or action_prefix.shape[2] != action_dim:
        raise ValueError(
            f"action_prefix has shape {tuple(action_prefix.shape)}, but this observation needs "
            f"[{batch_size}, {delay}, {action_dim}]: one prefix per observation (batch {batch_size}) "
            f"with the policy's {action_dim} action dimensions."
        )
    if not torch.isfinite(action_prefix).all():
        raise ValueError(
            "action_prefix holds NaN or inf values: pass the finite actions that execute while "
            "inference runs."
        )
