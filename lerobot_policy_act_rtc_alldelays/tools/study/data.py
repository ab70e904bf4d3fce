"""Training data from demonstrations: dataset statistics and LeRobot-style action windows."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from torch import Tensor

from ...relative_actions import ACTION_IS_PAD
from ..metaworld.state import Demo

STD_FLOOR = 0.01  # 1 cm for positions; actions and gripper values are of order 1


def demo_stats(demos: Sequence[Demo]) -> dict[str, dict[str, np.ndarray]]:
    """Per-feature statistics over all frames, as LeRobot computes dataset stats, with the standard
    deviation floored at `STD_FLOOR`: a coordinate that barely moves in the demonstrations (an object at
    rest) must not turn a millimetre at evaluation into a huge normalized input."""
    columns = {
        OBS_STATE: np.concatenate([d.state for d in demos]),
        OBS_ENV_STATE: np.concatenate([d.env_state for d in demos]),
        ACTION: np.concatenate([d.action for d in demos]),
    }
    return {
        key: {
            "mean": v.mean(0),
            "std": np.maximum(v.std(0), STD_FLOOR),
            "min": v.min(0),
            "max": v.max(0),
            "count": np.array([len(v)]),
        }
        for key, v in columns.items()
    }


def training_windows(demos: Sequence[Demo], action_offsets: Sequence[int]) -> dict[str, Tensor]:
    """Every frame of every demo with its action window at `action_offsets` (the config's
    `action_delta_indices`). As LeRobotDataset does, indices past the episode's end repeat its last action
    and are flagged in `action_is_pad`."""
    offsets = np.asarray(action_offsets)
    states, env_states, actions, pads = [], [], [], []
    for demo in demos:
        index = np.arange(demo.length)[:, None] + offsets[None, :]
        pads.append((index < 0) | (index >= demo.length))
        actions.append(demo.action[index.clip(0, demo.length - 1)])
        states.append(demo.state)
        env_states.append(demo.env_state)
    return {
        OBS_STATE: torch.from_numpy(np.concatenate(states)),
        OBS_ENV_STATE: torch.from_numpy(np.concatenate(env_states)),
        ACTION: torch.from_numpy(np.concatenate(actions)),
        ACTION_IS_PAD: torch.from_numpy(np.concatenate(pads)),
    }


@dataclass
class TrainingData:
    """Normalized training windows and the processors, per policy kind."""

    stats: dict[str, dict[str, np.ndarray]]
    demos: Sequence[Demo]
    cache: dict[tuple, tuple[dict[str, Tensor], Any, Any]] = field(default_factory=dict)

    @cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """Every frame's episode index, state and action, as a LeRobot dataset's columns (every relative
        variant's trainer derives its statistics from them)."""
        return {
            "episode_index": np.repeat(np.arange(len(self.demos)), [demo.length for demo in self.demos]),
            OBS_STATE: np.concatenate([demo.state for demo in self.demos]).astype(np.float64),
            ACTION: np.concatenate([demo.action for demo in self.demos]).astype(np.float64),
        }

    @property
    def episode(self) -> Tensor:
        """The demo index of every frame of the windows, [N]."""
        lengths = torch.tensor([demo.length for demo in self.demos])
        return torch.repeat_interleave(torch.arange(len(self.demos)), lengths)

    def get(self, config: PreTrainedConfig) -> tuple[dict[str, Tensor], Any, Any]:
        # The policy types, and this policy with and without relative actions, differ in windows or
        # normalization; `relative_anchor=last_action` adds the anchor to the windows.
        relative = getattr(config, "predict_relative_actions", None)
        kind = (config.type, relative, tuple(config.action_delta_indices))
        if kind not in self.cache:
            preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=self.stats)
            windows = training_windows(self.demos, config.action_delta_indices)
            normalized = preprocessor(windows)
            self.cache[kind] = ({key: normalized[key] for key in windows}, preprocessor, postprocessor)
        return self.cache[kind]
