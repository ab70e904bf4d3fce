"""The rules of the policy's config fields: each function refuses one kind of bad value with a message that
says what was wrong and how to fix it. `ACTRelativeRTCConfig` runs them when it is built and before
`select_action` requests a chunk."""

import math
import numbers
from typing import Any

from lerobot.configs.types import NormalizationMode

RTC_INFERENCE_MODES = ("prefix", "discard")
RTC_PREFIX_ATTENTIONS = ("full", "shared_observation")
RELATIVE_ANCHORS = ("state", "last_action")


def validate_config(config: Any) -> None:
    """Every rule of `ACTRelativeRTCConfig`'s fields (`config` is one)."""
    if not config.vision_backbone.startswith("resnet"):
        raise ValueError(
            "`vision_backbone` must be a torchvision ResNet (e.g. 'resnet18'), got "
            f"'{config.vision_backbone}'."
        )
    if config.n_obs_steps != 1:
        raise ValueError(f"`n_obs_steps` must be 1 (one observation per step), got {config.n_obs_steps}.")
    validate_chunking(config)
    validate_action_loss_weights(config.action_loss_weights)
    if config.first_action_index < 0:
        raise ValueError(
            f"`first_action_index` must be 0 or 1 (or larger), got {config.first_action_index}."
        )
    if config.downscale_img_square is not None and config.downscale_img_square <= 0:
        raise ValueError(
            "`downscale_img_square` must be a positive side length in pixels or None, got "
            f"{config.downscale_img_square}."
        )
    validate_inference_setting(config)
    validate_blend_steps(config)
    validate_prefix_remedies(config.rtc_prefix_dropout, config.rtc_prefix_noise_std)
    self_condition = config.rtc_prefix_self_condition
    if isinstance(self_condition, bool) or not isinstance(self_condition, int | float) or not (
        0 <= self_condition <= 1
    ):
        raise ValueError(
            "`rtc_prefix_self_condition` is the probability that a training prefix is the network's own "
            f"prediction: a number in [0, 1], got {self_condition!r}."
        )
    if config.rtc_prefix_attention not in RTC_PREFIX_ATTENTIONS:
        raise ValueError(
            f"`rtc_prefix_attention` must be one of {RTC_PREFIX_ATTENTIONS}, got "
            f"'{config.rtc_prefix_attention}'."
        )
    shared = config.rtc_prefix_attention == "shared_observation"
    if shared and config.rtc_max_delay == 0 and not config.use_vae:
        raise ValueError(
            "`rtc_prefix_attention=shared_observation` separates the observation from per-delay tokens, "
            "but with `rtc_max_delay=0` and no VAE there are none: use `rtc_prefix_attention=full`."
        )
    validate_relative_anchor(config)
    if config.predict_relative_actions:
        for feature_type in ("STATE", "ACTION"):
            mode = config.normalization_mapping.get(feature_type, NormalizationMode.IDENTITY)
            if mode != NormalizationMode.IDENTITY:
                raise ValueError(
                    "With `predict_relative_actions=true` the model normalizes relative actions itself "
                    f"from raw states and actions, so `normalization_mapping['{feature_type}']` must be "
                    f"IDENTITY, got {mode}."
                )


def validate_relative_anchor(config: Any) -> None:
    """`relative_anchor` is one of `RELATIVE_ANCHORS`, and an action anchor comes with relative actions."""
    if config.relative_anchor not in RELATIVE_ANCHORS:
        raise ValueError(
            f"`relative_anchor` must be one of {RELATIVE_ANCHORS}, got '{config.relative_anchor}'."
        )
    if config.relative_anchor == "last_action" and not config.predict_relative_actions:
        raise ValueError(
            "`relative_anchor=last_action` measures relative actions from the last commanded action, but "
            "`predict_relative_actions=false` predicts absolute actions. Set "
            "`--policy.predict_relative_actions=true`, or leave `relative_anchor` at 'state'."
        )


def validate_chunking(config: Any) -> None:
    """`rtc_max_delay`, `chunk_size`, `n_action_steps` and temporal ensembling fit together."""
    if config.rtc_max_delay < 0:
        raise ValueError(
            "`rtc_max_delay` must be >= 0 (the largest inference delay in control steps), got "
            f"{config.rtc_max_delay}. Use 0 to train without an action prefix."
        )
    if config.rtc_max_delay >= config.chunk_size:
        raise ValueError(
            f"`rtc_max_delay` ({config.rtc_max_delay}) must be smaller than `chunk_size` "
            f"({config.chunk_size}): a chunk predicted after a delay of `rtc_max_delay` actions must still "
            "hold new actions. Lower `--policy.rtc_max_delay` or raise `--policy.chunk_size`."
        )
    if config.n_action_steps > config.chunk_size:
        raise ValueError(
            f"`n_action_steps` ({config.n_action_steps}) cannot exceed `chunk_size` ({config.chunk_size}): "
            "a chunk only holds `chunk_size` actions. Lower `--policy.n_action_steps` or raise "
            "`--policy.chunk_size`."
        )
    if config.temporal_ensemble_coeff is not None and config.n_action_steps > 1:
        raise ValueError(
            "Temporal ensembling queries the policy every step: set `--policy.n_action_steps=1` with "
            "`temporal_ensemble_coeff`."
        )


def validate_inference_setting(config: Any) -> None:
    """`rtc_inference_mode` and `rtc_inference_delay` are a pair `select_action` can run."""
    validate_inference_delay_type(config.rtc_inference_delay)
    delay, mode = config.rtc_inference_delay, config.rtc_inference_mode
    if config.temporal_ensemble_coeff is not None and delay > 0:
        raise ValueError(
            "Temporal ensembling cannot be combined with an inference delay: set "
            "`--policy.rtc_inference_delay=0` or `--policy.temporal_ensemble_coeff=null`."
        )
    if mode not in RTC_INFERENCE_MODES:
        raise ValueError(f"`rtc_inference_mode` must be one of {RTC_INFERENCE_MODES}, got '{mode}'.")
    if delay < 0 or delay >= config.n_action_steps:
        raise ValueError(
            f"`rtc_inference_delay` must be in 0..n_action_steps-1 (0..{config.n_action_steps - 1}): the "
            f"next chunk is requested while `delay` actions of the current one remain. Got {delay}."
        )
    if mode == "prefix" and delay > config.rtc_max_delay:
        raise ValueError(
            f"`rtc_inference_delay` ({delay}) exceeds `rtc_max_delay` ({config.rtc_max_delay}), the largest "
            "delay the model was trained on. Lower it, or use `--policy.rtc_inference_mode=discard` to "
            "measure plain chunking at larger delays."
        )
    if mode == "discard" and delay + config.n_action_steps > config.chunk_size:
        raise ValueError(
            f"In discard mode a chunk must hold the {delay} dropped actions plus "
            f"n_action_steps={config.n_action_steps}, but chunk_size is {config.chunk_size}. Lower "
            "`n_action_steps` or the delay."
        )


def validate_blend_steps(config: Any) -> None:
    """Refuses an explicit `rtc_blend_steps` that is not an integer in 0..(the steps two chunks can overlap).
    None (the default) resolves to what the config allows, so it refuses nothing."""
    steps = config.rtc_blend_steps
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(
            "`rtc_blend_steps` counts the actions over which a new chunk is blended into the previous "
            f"one and must be an integer >= 0 (0: no blending) or null (half of the overlap), got {steps!r}."
        )
    if steps == 0:
        return
    if config.temporal_ensemble_coeff is not None:
        raise ValueError(
            "Temporal ensembling already averages every overlapping chunk at each step: set "
            "`--policy.rtc_blend_steps=0` (or null) or `--policy.temporal_ensemble_coeff=null`."
        )
    if steps > config.n_action_steps:
        raise ValueError(
            f"`rtc_blend_steps` ({steps}) exceeds `n_action_steps` ({config.n_action_steps}): the blend "
            "must end before the next chunk takes over, or the new chunk never fully replaces the "
            "previous one. Lower `--policy.rtc_blend_steps`."
        )
    # In prefix mode a chunk predicts `chunk_size - n_action_steps` actions past the ones it executes: the
    # most two chunks can overlap. (Discard mode drops `delay` more, and blends over what is left.)
    overlap = config.chunk_size - config.n_action_steps
    if steps > overlap:
        raise ValueError(
            f"`rtc_blend_steps` ({steps}) exceeds the {max(overlap, 0)} actions a chunk predicts past "
            f"the ones it executes (chunk_size={config.chunk_size} - "
            f"n_action_steps={config.n_action_steps}): past them the previous chunk has no action to blend "
            "with. Lower `--policy.rtc_blend_steps` or `--policy.n_action_steps`."
        )


def validate_delay_loss(config: Any) -> None:
    """`rtc_delays_per_sample`, `rtc_delay0_loss_share` and `rtc_delay_loss_weights` of the all-delays
    config."""
    k = config.rtc_delays_per_sample
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= config.n_delays):
        raise ValueError(
            "`rtc_delays_per_sample` must be an integer in 1..rtc_max_delay + 1 = "
            f"1..{config.n_delays} (the delays trained per sample), or null for all of them; got {k!r}."
        )
    share = config.rtc_delay0_loss_share
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):
        raise ValueError(
            "`rtc_delay0_loss_share` is delay 0's share of the training loss, a number in [0, 1] (or null "
            f"to weight every delay equally), got {share!r}."
        )
    weights = config.rtc_delay_loss_weights
    if weights is None:
        return
    if len(weights) != config.n_delays:
        raise ValueError(
            f"`rtc_delay_loss_weights` needs one weight per delay 0..rtc_max_delay, i.e. {config.n_delays} "
            f"numbers, got {len(weights)}: {list(weights)}."
        )
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(
            f"`rtc_delay_loss_weights` must be finite numbers, got {list(weights)}: a NaN or inf weight "
            "makes every training loss NaN."
        )
    if any(w < 0 for w in weights):
        raise ValueError(f"`rtc_delay_loss_weights` must be non-negative, got {list(weights)}.")
    if sum(weights) == 0:
        raise ValueError(
            f"`rtc_delay_loss_weights` are all zero ({list(weights)}): at least one delay must be trained."
        )


def validate_action_loss_weights(weights: dict[str, float] | None) -> None:
    """Refuses `action_loss_weights` that are not a map of action names to finite, non-negative numbers."""
    if weights is None:
        return
    if not isinstance(weights, dict):
        raise ValueError(
            "`action_loss_weights` must map action names to weights, e.g. '{\"gripper.pos\": 2.0}', "
            f"got {weights!r}."
        )
    bad = {
        name: weight
        for name, weight in weights.items()
        if isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    }
    if bad:
        raise ValueError(
            "`action_loss_weights` must be finite, non-negative numbers (a negative weight would train "
            f"a negated loss term), got {bad}. Fix or remove these entries."
        )


def validate_inference_delay_type(delay: int) -> None:
    """Refuses an `rtc_inference_delay` that is not an integer: it counts control steps and slices chunks."""
    if isinstance(delay, bool) or not isinstance(delay, numbers.Integral):
        whole = isinstance(delay, float) and delay.is_integer()
        raise ValueError(
            "`rtc_inference_delay` counts control steps and must be an integer, got "
            f"{delay!r} ({type(delay).__name__}).{f' Pass {int(delay)}.' if whole else ''}"
        )


def validate_prefix_remedies(dropout: float, noise_std: float) -> None:
    """Refuses a `rtc_prefix_dropout` outside [0, 1) and a negative or non-finite `rtc_prefix_noise_std`."""
    for name, value in (("rtc_prefix_dropout", dropout), ("rtc_prefix_noise_std", noise_std)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(
            "`rtc_prefix_dropout` is the probability of hiding a prefix in training: it must be in "
            f"[0, 1), got {dropout}. (1 would never train the prefix; use "
            "`rtc_max_delay=0` for a policy without one.)"
        )
    if noise_std < 0:
        raise ValueError(f"`rtc_prefix_noise_std` must be >= 0, got {noise_std}.")
