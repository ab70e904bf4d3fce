"""ACTSmooth, the peer plugin (`lerobot-policy-act-smooth`, policy type `act_smooth`), in the study.

ACTSmooth also trains every delay of a sample in one pass, and anchors relative actions at the first
committed action rather than at `observation.state`. It is optional: the `peers` extra installs it.

Its inference contract differs from this policy's: `select_action` is not implemented, and
`predict_action_chunk` takes a committed prefix of `d >= 1` actions that starts at the action of the
observation step and returns the chunk that follows the prefix. `CommittedPrefixChunking` runs it on the
study's schedule (chunks take over every `n_action_steps` steps):

- at delay `d >= 1` the prefix is exactly the `d` actions that execute while it infers (the ones this
  policy gets in prefix mode);
- at delay 0 it gets its minimum prefix, one committed action: the last action of the running chunk, so it
  observes one step before the join (its rows at delay 0 run as its delay 1);
- the first chunk of an episode has no running chunk: its one committed action is the hand's measured
  position with the gripper command the demonstrations start with (the hold-still command a position
  controller starts from; ACTSmooth's own loop uses the robot state, but this harness's gripper state is an
  opening, not a command), and it contributes `n_action_steps - 1` actions after it, so that every later
  chunk takes over at the same steps as the other policies'.
"""

import importlib.util
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor, nn

from ..metaworld.state import Demo

ACT_SMOOTH_MODULE = "lerobot_policy_act_smooth"
PEERS_INSTALL = "pip install 'lerobot_policy_act_rtc_alldelays[peers]'"
# The keys of ACTSmooth's inference batch (modeling_act_smooth.INFERENCE_ACTION and _IS_PAD).
INFERENCE_ACTION = "inference_action"
INFERENCE_ACTION_IS_PAD = "inference_action_is_pad"


def require_act_smooth() -> None:
    """Raises, before any training, when ACTSmooth is not installed."""
    if importlib.util.find_spec(ACT_SMOOTH_MODULE) is None:
        raise ValueError(
            f"The study variant 'act_smooth' is ACTSmooth from the package lerobot-policy-act-smooth, which "
            f"is not installed (no module '{ACT_SMOOTH_MODULE}'). Install the peers extra ({PEERS_INSTALL}) "
            "or leave act_smooth out of --variants."
        )


def act_smooth_config(fields: dict[str, Any], rtc_max_delay: int) -> PreTrainedConfig:
    """ACTSmooth with the study's shared fields, committed prefixes of 1 to `rtc_max_delay` actions and its
    other defaults (no past actions, relative actions anchored at the first committed action)."""
    require_act_smooth()
    from lerobot_policy_act_smooth import ACTSmoothConfig

    return ACTSmoothConfig(**fields, length_prefix_future=rtc_max_delay)


def act_smooth_policy(config: PreTrainedConfig) -> PreTrainedPolicy:
    from lerobot_policy_act_smooth import ACTSmoothPolicy

    return ACTSmoothPolicy(config)


def is_act_smooth(policy_or_config: Any) -> bool:
    config = getattr(policy_or_config, "config", policy_or_config)
    return getattr(config, "type", None) == "act_smooth"


class CommittedPrefixChunking(nn.Module):
    """ACTSmooth on the study's schedule at `delay` (module docstring), with a `select_action` for LeRobot's
    rollout. Actions are in the policy's normalized space, as the rollout's preprocessor and postprocessor
    expect. `first_committed_action` maps the (preprocessed) observation batch to the episode's first
    committed action [B, A]."""

    def __init__(
        self,
        policy: PreTrainedPolicy,
        delay: int,
        n_action_steps: int,
        first_committed_action: Callable[[dict[str, Tensor]], Tensor],
    ):
        super().__init__()
        max_prefix = policy.config.length_prefix_future
        if not 0 <= delay <= max_prefix or delay >= n_action_steps:
            raise ValueError(
                f"ACTSmooth at delay {delay} needs 0 <= delay <= length_prefix_future ({max_prefix}) and "
                f"delay < n_action_steps ({n_action_steps})."
            )
        self.policy, self.n_action_steps = policy, n_action_steps
        self.committed = max(delay, 1)  # its minimum prefix is one committed action
        self.config = policy.config
        self.first_committed_action = first_committed_action
        self._queue: deque[Tensor] = deque()

    def reset(self) -> None:
        self.policy.reset()
        self._queue.clear()

    def _predict(self, batch: dict[str, Tensor], prefix: Tensor) -> Tensor:
        """The chunk that follows the committed `prefix` [B, d, A]: [B, chunk_size, A]."""
        past = prefix.new_zeros(prefix.shape[0], 0, prefix.shape[2])
        action, is_pad = self.policy.build_inference_action_prefix(prefix, past)
        return self.policy.predict_action_chunk(
            {**batch, INFERENCE_ACTION: action, INFERENCE_ACTION_IS_PAD: is_pad}
        )

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor]) -> Tensor:
        if not self._queue:  # an episode's first step
            first = self.first_committed_action(batch)[:, None]  # [B, 1, A]
            chunk = self._predict(batch, first)[:, : self.n_action_steps - 1]
            self._queue.extend(torch.cat([first, chunk], dim=1).transpose(0, 1))
        elif len(self._queue) == self.committed:
            prefix = torch.stack(list(self._queue), dim=1)  # [B, d, A]: the actions that execute meanwhile
            chunk = self._predict(batch, prefix)[:, : self.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        return self._queue.popleft()


def hold_action(stats: dict[str, dict[str, np.ndarray]], demos: Sequence[Demo]) -> Callable[[dict], Tensor]:
    """The episode's first committed action from a preprocessed observation batch: the measured hand
    position (`observation.state[:, :3]`) with the mean gripper command of the demonstrations' first
    frames, [B, 4], normalized as the study normalizes actions (mean and std of `stats`)."""
    state_mean, state_std, action_mean, action_std = (
        torch.as_tensor(stats[key][name], dtype=torch.float32)
        for key, name in ((OBS_STATE, "mean"), (OBS_STATE, "std"), (ACTION, "mean"), (ACTION, "std"))
    )
    gripper = float(np.mean([demo.action[0, 3] for demo in demos]))

    def first_committed_action(batch: dict[str, Tensor]) -> Tensor:
        hand = (batch[OBS_STATE] * state_std + state_mean)[:, :3]
        action = torch.cat([hand, hand.new_full((len(hand), 1), gripper)], dim=1)
        return (action - action_mean) / action_std

    return first_committed_action
