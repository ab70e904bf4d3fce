"""Checks of what reaches the policy at inference: the observation and the action prefix."""

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE
from torch import Tensor

from .configuration_act_relative_rtc import ACTRelativeRTCConfig


def observation_inputs(config: ACTRelativeRTCConfig) -> dict[str, int]:
    """The observation keys the model reads, each with its number of dimensions: cameras [B, C, H, W],
    `observation.environment_state` [B, E] if configured, `observation.state` [B, S] when it is read."""
    required = {key: 4 for key in config.image_features}
    if config.env_state_feature:
        required[OBS_ENV_STATE] = 2
    if config.predict_relative_actions or config.has_state_token:
        required[OBS_STATE] = 2
    return required


def observation_batch_size(config: ACTRelativeRTCConfig, batch: dict[str, Tensor]) -> int:
    """Checks that the observation holds every input the model reads, batched alike, camera images in the
    model's layout and size; returns B."""
    required = observation_inputs(config)
    missing = [key for key in required if batch.get(key) is None]
    if missing:
        raise ValueError(
            f"The observation lacks {missing}; this policy reads {list(required)}. Pass the observation "
            "through the policy's preprocessor, and map other camera names with `--rename_map`."
        )
    not_tensors = {key: type(batch[key]).__name__ for key in required if not isinstance(batch[key], Tensor)}
    if not_tensors:
        raise ValueError(
            f"Observation inputs must be torch tensors, got {not_tensors}. Pass the observation through "
            "LeRobot's `prepare_observation_for_inference` and the policy's preprocessor."
        )
    shapes = {key: tuple(batch[key].shape) for key in required}
    if any(len(shapes[key]) != ndim for key, ndim in required.items()):
        raise ValueError(
            "Observation tensors need a batch dimension (cameras [B, C, H, W], states [B, dim]), got "
            f"shapes {shapes}. Add it with `unsqueeze(0)`, as LeRobot's preprocessor does."
        )
    for key in config.image_features:
        check_image_shape(config, key, shapes[key])
    if OBS_STATE in required:
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


def model_image_size(config: PreTrainedConfig, key: str) -> tuple[int, int]:
    """(height, width) of camera `key` as the model reads it: with `downscale_img_square` the preprocessor
    pads and resizes every image to that square, whatever the camera's size; otherwise the feature's size.
    Any policy config (LeRobot's ACT has no `downscale_img_square`)."""
    side = getattr(config, "downscale_img_square", None)
    if side is not None:
        return side, side
    height, width = config.image_features[key].shape[1:]
    return height, width


def check_image_shape(config: ACTRelativeRTCConfig, key: str, shape: tuple[int, ...]) -> None:
    """Refuses a [B, C, H, W] camera image whose channels or size differ from the model's: the backbone would
    fail on other channels with a bare convolution error, and run on another size silently."""
    channels = config.image_features[key].shape[0]
    height, width = model_image_size(config, key)
    if shape[1] != channels:
        raise ValueError(
            f"Camera image '{key}' has shape {shape}, but the policy reads channels-first images "
            f"[B, {channels}, H, W] = [{shape[0]}, {channels}, {height}, {width}]. Permute a channels-last "
            f"image [B, H, W, {channels}] with `image.permute(0, 3, 1, 2)`, as LeRobot's "
            "`prepare_observation_for_inference` does."
        )
    if shape[2:] == (height, width):
        return
    received = f"Camera image '{key}' is {shape[2]}x{shape[3]} pixels (height x width)"
    if config.downscale_img_square is not None:
        raise ValueError(
            f"{received}, but this policy reads {height}x{width} images: its preprocessor pads and resizes "
            f"every camera image to that square (`downscale_img_square={height}`). Pass the observation "
            "through the policy's preprocessor."
        )
    raise ValueError(
        f"{received}, but this policy was built for {height}x{width} images (the shape of '{key}' in "
        f"`config.input_features`). Set the camera's resolution to {height}x{width}, or train the policy "
        "with `--policy.downscale_img_square=<side>`: its preprocessor then pads and resizes every camera "
        "image to that square, whatever the camera's resolution."
    )


def model_observation(config: ACTRelativeRTCConfig, batch: dict[str, Tensor], parameter: Tensor) -> dict:
    """The observation as the model reads it: each input on the policy's device, cast to the dtype of its
    parameters (`parameter`, one of them) as LeRobot's processors would cast it, and finite.

    Call after `observation_batch_size`. Raises ValueError for an input on another device, an integer
    camera image (it needs normalizing, not a cast) or a non-floating state, and for NaN or inf values.
    The finiteness check costs one sum per input and one host synchronization in all: a sum is finite
    unless a value is NaN or inf (or finite values overflow it: the exact check that then runs, and that
    names the bad batch rows, lets them pass). `torch.isfinite(x).all()` would take ~30x longer on a camera
    image on CPU. Keys the model does not read are passed on untouched."""
    device, dtype = parameter.device, parameter.dtype
    inputs = {}
    for key in observation_inputs(config):
        value = batch[key]
        if value.device != device:
            raise ValueError(
                f"'{key}' is on device {value.device}, but the policy is on {device}. Move the "
                "observation to the policy's device: LeRobot's preprocessor does it in its device step "
                "(`DeviceProcessorStep`, set by `--policy.device`); or move the policy with "
                f"`policy.to('{value.device}')`."
            )
        if not value.is_floating_point():
            if key in config.image_features:
                raise ValueError(
                    f"Camera image '{key}' has dtype {value.dtype}; the policy reads float images, scaled "
                    "to [0, 1] and then normalized by its preprocessor. Convert the pixels with "
                    "`image.float() / 255` (channels first, [B, C, H, W]), as LeRobot's "
                    "`prepare_observation_for_inference` does, and pass the observation through the "
                    "policy's preprocessor."
                )
            raise ValueError(
                f"'{key}' has dtype {value.dtype}; the policy reads floating-point states. Convert it with "
                "`.float()`, as LeRobot's `prepare_observation_for_inference` does."
            )
        inputs[key] = value.to(dtype)
    if inputs and not torch.isfinite(torch.stack([_total(value) for value in inputs.values()])).all():
        message = _non_finite_message(batch, inputs)
        if message is not None:
            raise ValueError(message)
    return {**batch, **inputs}


def _total(value: Tensor) -> Tensor:
    """The sum of all values, accumulated in float32 at least (a float16 image sums past 65504)."""
    return value.sum(dtype=torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else None)


def _non_finite_message(batch: dict[str, Tensor], inputs: dict[str, Tensor]) -> str | None:
    """Names the inputs and batch rows holding NaN or inf (after the cast), and values that only overflowed
    the policy's dtype in the cast; None if every value is finite."""
    found = []
    for key, value in inputs.items():
        bad_rows = ~torch.isfinite(value).flatten(1).all(dim=1)
        if not bad_rows.any():
            continue
        rows = bad_rows.nonzero().flatten().tolist()
        overflowed = torch.isfinite(batch[key]).flatten(1).all(dim=1)[bad_rows].all()
        if overflowed:
            found.append(
                f"'{key}' in batch rows {rows} (finite {batch[key].dtype} values that overflow "
                f"the policy's {value.dtype})"
            )
        else:
            found.append(f"'{key}' in batch rows {rows}")
    if not found:
        return None
    return (
        f"The observation holds NaN or inf values: {'; '.join(found)}. The policy refuses to predict actions "
        "from them. Check the sensor readings, and the preprocessor's statistics (a zero or NaN std "
        "divides by zero)."
    )


def check_inference_setting(config: ACTRelativeRTCConfig) -> None:
    """Refuses an `rtc_inference_mode` / `rtc_inference_delay` pair, possibly set after construction, that
    the config's own rules reject (`select_action` would otherwise run another setting silently)."""
    mode, delay = config.rtc_inference_mode, config.rtc_inference_delay
    error = config.inference_setting_error(mode, delay)
    if error is not None:
        raise ValueError(
            f"select_action cannot run with rtc_inference_mode='{mode}' and rtc_inference_delay={delay}: "
            f"{error} Set both together with `policy.config.set_inference_setting(mode, delay)`, which "
            "checks them when they are set."
        )


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


def check_last_action(config: ACTRelativeRTCConfig, last_action: Tensor | None, batch_size: int) -> None:
    """Refuses a `last_action` that is not [B, A] finite actions."""
    if last_action is None:
        return
    action_dim = config.action_feature.shape[0]
    if tuple(last_action.shape) != (batch_size, action_dim):
        raise ValueError(
            f"last_action must be [batch, action_dim] = [{batch_size}, {action_dim}] (the action commanded "
            f"just before this observation, one per observation), got shape {tuple(last_action.shape)}."
        )
    if not torch.isfinite(last_action).all():
        raise ValueError("last_action holds NaN or inf values: pass the finite action last commanded.")
