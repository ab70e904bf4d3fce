"""The prefix-reliance diagnostic: a policy blind to its prefix scores 0, one blind to its observation scores
high, and swaps pair every frame with another episode at the same progress."""

import pytest
import torch
from conftest import STATE_DIM, tiny_config
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.relative_actions import ACTION_IS_PAD
from lerobot_policy_act_rtc_alldelays.tools.study.prefix_reliance import (
    expert_actions,
    partner_frames,
    prefix_reliance,
)

ENV_DIM = 6
EPISODE_LENGTHS = (12, 9, 15)
DELAYS = (1, 3)  # the tiny config's rtc_max_delay is 3


def state_policy() -> ACTRelativeRTCAllDelaysPolicy:
    """A tiny state-only policy whose only observation input is the environment state."""
    config = tiny_config(
        input_features={
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(ENV_DIM,)),
        },
        predict_relative_actions=False,
        use_state_token=False,
    )
    torch.manual_seed(0)
    return ACTRelativeRTCAllDelaysPolicy(config)


def frames(policy: ACTRelativeRTCAllDelaysPolicy) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    n = sum(EPISODE_LENGTHS)
    generator = torch.Generator().manual_seed(1)
    windows = {
        OBS_STATE: torch.randn(n, STATE_DIM, generator=generator),
        OBS_ENV_STATE: torch.randn(n, ENV_DIM, generator=generator),
        ACTION: torch.randn(n, policy.config.action_window_size, STATE_DIM, generator=generator),
    }
    episode = torch.repeat_interleave(torch.arange(len(EPISODE_LENGTHS)), torch.tensor(EPISODE_LENGTHS))
    return windows, episode


def zero(layer: torch.nn.Linear) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()


def test_a_policy_blind_to_its_prefix_has_zero_reliance():
    policy = state_policy()
    zero(policy.model.prefix_input_proj)  # every prefix value maps to the same token
    result = prefix_reliance(policy, *frames(policy), DELAYS)
    assert set(result) == set(DELAYS)
    for figures in result.values():
        assert figures["prefix_change"] == 0.0 and figures["observation_change"] > 0
        assert figures["prefix_reliance"] == 0.0


def test_a_policy_blind_to_its_observation_has_a_large_reliance():
    policy = state_policy()
    zero(policy.model.encoder_env_state_input_proj)  # every observation maps to the same token
    for figures in prefix_reliance(policy, *frames(policy), DELAYS).values():
        assert figures["observation_change"] == 0.0 and figures["prefix_change"] > 0
        assert figures["prefix_reliance"] > 100


def test_partners_lie_in_another_episode_at_the_same_progress():
    episode = torch.repeat_interleave(torch.arange(3), torch.tensor([10, 20, 40]))
    starts, lengths = torch.tensor([0, 10, 30]), torch.tensor([10, 20, 40])
    chosen = torch.arange(len(episode))
    partners = partner_frames(episode, chosen, torch.Generator().manual_seed(0))
    assert (episode[partners] != episode[chosen]).all()
    progress = (chosen - starts[episode]) / lengths[episode]
    partner_progress = (partners - starts[episode[partners]]) / lengths[episode[partners]]
    assert (progress - partner_progress).abs().max() < 0.1  # the shortest episode's resolution


def test_a_delay_without_prefix_is_refused():
    policy = state_policy()
    with pytest.raises(ValueError, match="delays > 0"):
        prefix_reliance(policy, *frames(policy), (0, 1))


def test_an_anchored_policy_is_given_the_window_past_its_anchor_and_the_anchor_as_last_action():
    config = tiny_config(relative_anchor="last_action")
    policy = ACTRelativeRTCAllDelaysPolicy(config)
    generator = torch.Generator().manual_seed(2)
    windows = {
        OBS_STATE: torch.randn(3, STATE_DIM, generator=generator),
        ACTION: torch.randn(3, len(config.action_delta_indices), STATE_DIM, generator=generator),
        ACTION_IS_PAD: torch.tensor([[False] * 8, [True] + [False] * 7, [False] * 8]),
    }
    actions, is_pad, last_action = expert_actions(policy, windows, torch.tensor([1, 0]))
    assert torch.equal(actions, windows[ACTION][[1, 0], 1:]) and not is_pad.any()
    # Frame 1 opens its episode: nothing was commanded before it, so its state stands in.
    assert torch.equal(last_action, torch.stack([windows[OBS_STATE][1], windows[ACTION][0, 0]]))
