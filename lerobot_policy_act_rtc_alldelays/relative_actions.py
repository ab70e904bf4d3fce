"""Relative actions: `action - origin`, the origin being `observation.state[t]` or the last commanded action
(`relative_anchor`), normalized with statistics of the training windows; the robot state's own statistics
for the state token; reading them from a dataset's parquet files."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor, nn
from tqdm import tqdm

# LeRobot's dataset names the padding mask of a key's window "<key>_is_pad"; no constant exists for it.
ACTION_IS_PAD = f"{ACTION}_is_pad"
# Frames per block when accumulating the statistics: bounds memory to block * window * action_dim floats.
_STATS_BLOCK_FRAMES = 8192
# A joint that never moves relative to the state would give std 0 and divide by zero.
_MIN_STD = 1e-6


class DatasetStatistics(nn.Module):
    """A mean and std per dimension, derived from the training dataset and stored as buffers, so they travel
    in `model.safetensors` with the weights. They start as NaN: a policy that was neither trained from a
    dataset nor loaded from a checkpoint refuses to use them."""

    # What the statistics are, and of which feature, for error messages.
    name = "statistics"
    feature = "feature"

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.full((dim,), float("nan")))
        self.register_buffer("std", torch.full((dim,), float("nan")))
        # Checked once, not every step: reading a GPU tensor's value on the host stalls the training step.
        self._stats_checked = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._stats_checked = False
        if f"{prefix}mean" in state_dict or f"{prefix}std" in state_dict:
            self.check_loaded_stats()

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        expected = tuple(self.mean.shape)
        for what, value in (("mean", mean), ("std", std)):
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"The {self.name}' {what} has shape {tuple(value.shape)}, but the {self.feature} has "
                    f"{expected[0]} dimensions: expected shape {expected}. The statistics must come from a "
                    f"dataset with the same {self.feature} space as the policy."
                )
        _refuse_bad_stats(mean, std, f"The {self.name} to set", self.feature, min_std=0.0)
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(_MIN_STD))
        self._stats_checked = False

    def check_loaded_stats(self) -> None:
        """The checks of `set_stats` on statistics restored from a state dict. Statistics that are all NaN
        (a policy saved before any dataset was seen) load, and `check_stats` refuses them at use."""
        if torch.isnan(self.mean).all() and torch.isnan(self.std).all():
            return
        # `set_stats` clamps the std to `_MIN_STD`: a smaller value cannot come from it.
        what = f"The loaded {self.name} (checkpoint or state dict)"
        _refuse_bad_stats(self.mean, self.std, what, self.feature, _MIN_STD)

    def check_stats(self) -> None:
        if self._stats_checked:
            return
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise RuntimeError(
                f"The {self.name} are missing (NaN). They are computed when training starts from a dataset "
                "(`make_policy(cfg, ds_meta=...)` or `Policy(config, dataset_meta=...)`) and restored by "
                "`from_pretrained`. Load a trained checkpoint, or pass the dataset metadata."
            )
        self._stats_checked = True


class RelativeActionNormalizer(DatasetStatistics):
    """Maps absolute actions to normalized relative actions and back."""

    name = "relative-action statistics"
    feature = "action"

    def normalize(self, actions: Tensor, origin: Tensor) -> Tensor:
        """[B, T, A] absolute actions, [B, A] origin -> [B, T, A] normalized relative actions."""
        return (actions - origin.unsqueeze(1) - self.mean) / self.std

    def unnormalize(self, relative_actions: Tensor, origin: Tensor) -> Tensor:
        """[B, T, A] normalized relative actions, [B, A] origin -> [B, T, A] absolute actions."""
        return relative_actions * self.std + self.mean + origin.unsqueeze(1)


class StateNormalizer(DatasetStatistics):
    """Normalizes the raw robot state for the state token. With relative actions on, the preprocessor must
    leave the state raw (it is the actions' origin), so the token's input is normalized here."""

    name = "robot-state statistics"
    feature = "state"

    def normalize(self, state: Tensor) -> Tensor:
        """[B, S] raw state -> [B, S] normalized state."""
        return (state - self.mean) / self.std


def action_window(config, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    """A training batch's action window past its anchor, as the preprocessor delivers it [B, W, A], its
    padding mask [B, W], and the origin of its relative actions [B, A] (None without them): the state, or
    with `relative_anchor=last_action` the window's anchor action, the state where the dataset padded it (an
    episode's first frame). `config` is the policy's."""
    window = batch[ACTION]
    anchored = config.anchors_on_last_action
    expected = config.action_window_size + anchored
    if window.ndim != 3 or window.shape[1] != expected:
        what = "the anchor action, then " if anchored else ""
        raise ValueError(
            f"'{ACTION}' must be a window of {what}rtc_max_delay + chunk_size = "
            f"{config.action_window_size} actions per sample ([batch, {expected}, action_dim]), got shape "
            f"{tuple(window.shape)}. Load the dataset with `delta_timestamps` from this config's "
            "`action_delta_indices` (a dataset cached with another chunk_size, rtc_max_delay or "
            "relative_anchor returns other windows)."
        )
    window_is_pad = batch.get(ACTION_IS_PAD)
    if window_is_pad is None:
        window_is_pad = torch.zeros(window.shape[:2], dtype=torch.bool, device=window.device)
    origin = batch.get(OBS_STATE) if config.predict_relative_actions else None
    if anchored:
        origin = torch.where(window_is_pad[:, :1], origin, window[:, 0])  # [B, A]
        window, window_is_pad = window[:, 1:], window_is_pad[:, 1:]
    return window, window_is_pad, origin


def inference_origin(config, state: Tensor | None, last_action: Tensor | None) -> Tensor | None:
    """What a chunk's relative actions are measured from at inference: the last commanded action [B, A]
    with `relative_anchor=last_action` once there is one, the state [B, A] otherwise."""
    if config.anchors_on_last_action and last_action is not None:
        return last_action
    return state


def _refuse_bad_stats(mean: Tensor, std: Tensor, what: str, feature: str, min_std: float) -> None:
    """Raises if a mean or std entry is not finite or a std is below `min_std`."""
    bad = ~torch.isfinite(mean) | ~torch.isfinite(std) | (std < min_std)
    if bad.any():
        dims = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"{what} are invalid in {feature} dimensions {dims}: mean={mean[bad].tolist()}, "
            f"std={std[bad].tolist()}. Every mean must be finite and every std finite and >= {min_std:g}. "
            "Recompute them from a dataset without NaN or inf values (train from the dataset again), or "
            "load an intact checkpoint."
        )


def _read_column(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1)
    return column.to_numpy(zero_copy_only=False)


def read_dataset_columns(dataset_root: str | Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Reads `index`, `episode_index`, `frame_index` and the numeric feature columns `keys` of every frame
    from the dataset's parquet files, ordered by dataset index. Features come back as float64 [N, dim].

    Only these columns are read: no image or video frame is decoded.
    """
    files = sorted((Path(dataset_root) / "data").glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"No parquet data files under {Path(dataset_root) / 'data'}: cannot read the dataset's {keys} "
            "columns. Is the dataset fully downloaded?"
        )
    index_keys = ["index", "episode_index", "frame_index"]
    tables = [pq.read_table(f, columns=[*index_keys, *keys]) for f in files]
    table = pa.concat_tables(tables).sort_by("index")
    columns = {key: _read_column(table, key) for key in index_keys}
    for key in keys:
        values = _read_column(table, key).astype(np.float64)
        columns[key] = values.reshape(len(table), -1)
    return columns


def read_state_and_action_columns(
    dataset_root: str | Path, state_key: str, action_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads (episode_index, state, action) of every frame from the dataset's parquet files."""
    columns = read_dataset_columns(dataset_root, [state_key, action_key])
    return columns["episode_index"], columns[state_key], columns[action_key]


def refuse_non_finite_columns(columns: dict[str, np.ndarray], keys: list[str], dataset: str) -> None:
    """Raises, naming the column, an episode and a frame, if a column of `keys` holds NaN or inf."""
    for key in keys:
        bad_rows = np.flatnonzero(~np.isfinite(columns[key]).all(axis=1))
        if len(bad_rows) == 0:
            continue
        row = bad_rows[0]
        raise ValueError(
            f"The dataset {dataset} has NaN or inf values in '{key}' in {len(bad_rows)} of "
            f"{len(columns[key])} frames, the first at episode {columns['episode_index'][row]}, frame "
            f"{columns['frame_index'][row]} (dataset index {columns['index'][row]}): "
            f"{columns[key][row].tolist()}. Training on them would produce NaN losses and weights. Repair "
            "those frames, or remove their episodes (`lerobot-edit-dataset --operation.type=delete_episodes "
            "--operation.episode_indices=[...]`), and train again."
        )


def stats_fingerprint(columns: list[np.ndarray], action_offsets: list[int]) -> Tensor:
    """SHA-256 [32] uint8 of what the relative-action statistics and loss weights are derived from: the
    given columns (episode index, state, action of every frame) and the action window offsets."""
    digest = hashlib.sha256()
    for column in columns:
        column = np.ascontiguousarray(column)
        digest.update(f"{column.dtype.str}{column.shape}".encode())
        digest.update(column.tobytes())
    digest.update(repr(list(action_offsets)).encode())
    return torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8)


def compute_state_stats(state: np.ndarray) -> tuple[Tensor, Tensor]:
    """Mean and std per dimension of the robot state over every frame: [N, S] -> ([S], [S])."""
    return torch.from_numpy(state.mean(0)).float(), torch.from_numpy(state.std(0)).float()


def last_action_origins(
    episode_index: np.ndarray, state: np.ndarray, action: np.ndarray, anchor_offset: int
) -> np.ndarray:
    """Each frame's `relative_anchor=last_action` origin: the action `anchor_offset` frames from it in its
    episode (-1 with `first_action_index=0`: the action before it), its state where that frame lies outside
    the episode (an episode's first frame: nothing was commanded before it), as in training, where LeRobot
    pads that window position. [N], [N, A], [N, A] -> [N, A]."""
    first, last = episode_bounds(episode_index)
    anchor = np.arange(len(episode_index)) + anchor_offset
    inside = (anchor >= first) & (anchor <= last)
    return np.where(inside[:, None], action[anchor.clip(0, len(episode_index) - 1)], state)


def episode_bounds(episode_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index of each frame's episode's first and last frame ([N] each), from the [N] episode index of
    frames in dataset order, episodes contiguous."""
    n_frames = len(episode_index)
    episode_starts = np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]])
    episode_ends = np.r_[episode_starts[1:], n_frames]
    episode_of_frame = np.repeat(np.arange(len(episode_starts)), episode_ends - episode_starts)
    return episode_starts[episode_of_frame], episode_ends[episode_of_frame] - 1


def compute_relative_action_stats(
    episode_index: np.ndarray, origin: np.ndarray, action: np.ndarray, action_offsets: list[int]
) -> tuple[Tensor, Tensor]:
    """Mean and std per action dimension of `action[t + k] - origin[t]` over every training window.

    The windows are the ones LeRobot's dataset returns for `delta_timestamps`: offsets `k` in
    `action_offsets`, indices clamped to the frame's episode (padding repeats the episode's first or last
    action), so the statistics cover exactly the (state, window) pairs training sees.

    Args:
        episode_index: [N] episode of each frame, frames ordered by dataset index.
        origin: [N, A] each frame's origin (its state, or `last_action_origins`). action: [N, A] actions.
        action_offsets: the offsets of the policy's window past the anchor (`action_delta_indices`).
    """
    n_frames = len(episode_index)
    frame = np.arange(n_frames)
    first, last = (bound[:, None] for bound in episode_bounds(episode_index))  # [N, 1] each
    offsets = np.asarray(action_offsets)[None, :]  # [1, W]

    total = np.zeros(action.shape[1])
    total_sq = np.zeros(action.shape[1])
    count = 0
    for start in tqdm(range(0, n_frames, _STATS_BLOCK_FRAMES), desc="Relative-action stats", unit="block"):
        block = slice(start, start + _STATS_BLOCK_FRAMES)
        window_index = np.clip(frame[block, None] + offsets, first[block], last[block])  # [n, W]
        relative = action[window_index] - origin[block, None, :]  # [n, W, A]
        total += relative.sum(axis=(0, 1))
        total_sq += np.square(relative).sum(axis=(0, 1))
        count += relative.shape[0] * relative.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    logging.info(
        "Relative-action statistics from %d frames x %d window actions: mean=%s std=%s",
        n_frames,
        offsets.shape[1],
        np.array2string(mean, precision=4),
        np.array2string(std, precision=4),
    )
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()
