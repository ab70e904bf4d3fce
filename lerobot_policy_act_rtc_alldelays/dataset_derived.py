"""Buffers derived from the training dataset rather than learned: the action loss weights, the
relative-action statistics and the fingerprint of the data they came from.

They are derived when `make_policy` builds the policy from a dataset, travel in `model.safetensors`, and on
a checkpoint load (`--policy.path`, `--resume`) are kept when the checkpoint saw the same data and
re-derived when it did not (fine-tuning on other data).
"""

import logging

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from torch import Tensor, nn

from .relative_actions import (
    compute_relative_action_stats,
    compute_state_stats,
    last_action_origins,
    read_dataset_columns,
    refuse_non_finite_columns,
    stats_fingerprint,
)

DATASET_DERIVED_BUFFERS = (
    "action_loss_weight",
    "relative_action_normalizer.mean",
    "relative_action_normalizer.std",
    "state_normalizer.mean",
    "state_normalizer.std",
)


def register_dataset_derived_buffers(policy: nn.Module, action_dim: int) -> None:
    """The buffers every policy carries, at their values for "not derived from any dataset"."""
    policy.register_buffer("action_loss_weight", torch.ones(action_dim))
    # What the statistics and loss weights were derived from (all zero: unknown).
    policy.register_buffer("stats_fingerprint", torch.zeros(32, dtype=torch.uint8))
    policy._derived_from_dataset = None


def derive_from_dataset(policy: nn.Module, dataset_meta) -> None:
    """Derives the buffers from `dataset_meta`. If `make_policy` loads a checkpoint next
    (`config.pretrained_path`), remembers them so that `after_state_dict_load` decides which values stay."""
    init_from_dataset(policy, dataset_meta)
    if policy.config.pretrained_path is not None:
        policy._derived_from_dataset = {
            k: v.clone()
            for k, v in policy.state_dict().items()
            if k in (*DATASET_DERIVED_BUFFERS, "stats_fingerprint")
        }
        policy._dataset_name = f"'{dataset_meta.repo_id}' ({dataset_meta.root})"


def init_from_dataset(policy: nn.Module, dataset_meta) -> None:
    """Refuses NaN or inf in the dataset's numeric columns, then derives the loss weights, the
    relative-action statistics and their fingerprint. Reads only those parquet columns."""
    dataset = f"'{dataset_meta.repo_id}' ({dataset_meta.root})"
    keys = [k for k in (OBS_STATE, OBS_ENV_STATE, ACTION) if k in dataset_meta.features]
    columns = read_dataset_columns(dataset_meta.root, keys)
    refuse_non_finite_columns(columns, keys, dataset)
    if policy.config.action_loss_weights:
        policy.action_loss_weight.copy_(
            action_weights_from_names(policy.config.action_loss_weights, dataset_meta.features[ACTION])
        )
    init_from_columns(policy, columns)


def init_from_columns(policy: nn.Module, columns: dict[str, np.ndarray]) -> None:
    """Derives the relative-action statistics, the state token's statistics and their fingerprint from
    every frame's `episode_index`, `observation.state` and `action` ([N] and [N, dim] arrays, frames in
    dataset order, episodes contiguous): what `init_from_dataset` reads from a dataset's parquet files, or
    what a tool has in memory."""
    config = policy.config
    stats_columns = [columns[k] for k in ("episode_index", OBS_STATE, ACTION) if k in columns]
    # The offsets name the anchor too (`relative_anchor=last_action` adds first_action_index - 1).
    policy.stats_fingerprint.copy_(stats_fingerprint(stats_columns, config.action_delta_indices))
    if config.predict_relative_actions:
        episode_index, state, action = columns["episode_index"], columns[OBS_STATE], columns[ACTION]
        offsets = config.action_delta_indices
        origin = state
        if config.anchors_on_last_action:
            origin = last_action_origins(episode_index, state, action, offsets[0])
            offsets = offsets[1:]  # the window past its anchor
        mean, std = compute_relative_action_stats(episode_index, origin, action, offsets)
        policy.relative_action_normalizer.set_stats(mean, std)
    if hasattr(policy, "state_normalizer"):
        policy.state_normalizer.set_stats(*compute_state_stats(columns[OBS_STATE]))


def action_weights_from_names(weights_by_name: dict[str, float], action_feature: dict) -> Tensor:
    """Per-dimension L1 weights [A] from `{action_name: weight}`, names taken from the dataset's features."""
    names = action_feature.get("names")
    if isinstance(names, dict):  # older datasets: {"motors": [...]}
        names = next(iter(names.values()))
    dim = action_feature["shape"][0]
    if not names or len(names) != dim:
        raise ValueError(
            "`action_loss_weights` needs the dataset's action feature names, but the action feature has "
            f"names={names!r} for {dim} dimensions. Record the dataset with named actions or drop "
            "`action_loss_weights`."
        )
    unknown = sorted(set(weights_by_name) - set(names))
    if unknown:
        raise ValueError(
            f"`action_loss_weights` names {unknown} are not action names of the dataset: {names}. Rename or "
            "remove them in `--policy.action_loss_weights`."
        )
    logging.info("Action loss weights: %s", weights_by_name)
    return torch.tensor([float(weights_by_name.get(name, 1.0)) for name in names])


def _fingerprint_hex(fingerprint: Tensor) -> str:
    return bytes(fingerprint.cpu().tolist()).hex()[:16]


def loaded_without(incompatible_keys, name: str) -> bool:
    """Whether a `load_state_dict` left the buffer or parameter `name` (of any submodule) missing."""
    return any(key == name or key.endswith(f".{name}") for key in incompatible_keys.missing_keys)


def after_state_dict_load(policy: nn.Module, incompatible_keys) -> None:
    """Post hook of `load_state_dict` (which `from_pretrained` uses): on the first load after `__init__`
    derived values from a dataset (`make_policy` loading `--policy.path` or a resumed checkpoint), keeps the
    checkpoint's statistics and loss weights if they come from the same data and restores the dataset's
    otherwise."""
    derived, policy._derived_from_dataset = policy._derived_from_dataset, None
    if derived is None:
        return
    loaded = policy.stats_fingerprint
    new = derived["stats_fingerprint"]
    same_data = loaded.any() and torch.equal(loaded.cpu(), new.cpu())
    if same_data and not loaded_without(incompatible_keys, "stats_fingerprint"):
        logging.info(
            "Resuming or continuing on the same data: the checkpoint's relative-action statistics were "
            "derived from dataset %s (fingerprint %s), so they are kept unchanged.",
            policy._dataset_name,
            _fingerprint_hex(new),
        )
        derived = {"action_loss_weight": derived["action_loss_weight"]}
    else:
        logging.info(
            "Fine-tuning on other data: the checkpoint's relative-action statistics and action loss weights "
            "were derived from other data (fingerprint %s), so they are re-derived from dataset %s "
            "(fingerprint %s).",
            _fingerprint_hex(loaded) if loaded.any() else "not recorded",
            policy._dataset_name,
            _fingerprint_hex(new),
        )
    if not torch.equal(policy.action_loss_weight.cpu(), derived["action_loss_weight"].cpu()):
        logging.info(
            "Action loss weights: %s from the configuration replace the checkpoint's %s.",
            derived["action_loss_weight"].tolist(),
            policy.action_loss_weight.tolist(),
        )
    buffers = dict(policy.named_buffers())  # a checkpoint from before the state token has no state statistics
    with torch.no_grad():
        for name, value in derived.items():
            if name in buffers:
                buffers[name].copy_(value)
    for name in ("relative_action_normalizer", "state_normalizer"):
        if hasattr(policy, name):
            getattr(policy, name)._stats_checked = False
