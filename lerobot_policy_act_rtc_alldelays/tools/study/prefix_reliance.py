"""Prefix reliance: does a trained RTC policy's chunk follow its action prefix or its observation?

In training the prefix is the expert's own next actions, which predict the chunk almost perfectly; a network
can learn to continue them instead of reading the observation (a copycat), and in closed loop it then
continues its own stale plan. This diagnostic measures it on training frames, at each delay d > 0, from
three predictions of the policy (its public `predict_action_chunk`, eval mode, no gradients):

- own: the frame's observation and prefix (the first d actions of its action window, as in training; with
  `relative_anchor=last_action` also the action before them, the window's anchor);
- prefix swap: the prefix of a partner frame from another episode;
- observation swap: the partner's observation, the own prefix kept.

The partner frame lies at the same progress through another episode (episodes paired by a seeded
derangement), so both swaps stay in the phase of the task the frame is in. Reported per delay: the mean
absolute change of the predicted chunk in the model's action space for each swap, and
`prefix_reliance = prefix_change / observation_change` (> 1: the chunk follows the prefix more than the
observation; infinite when the observation changes nothing).
"""

from collections.abc import Sequence

import torch
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor

from ...modeling_act_relative_rtc import ACTRelativeRTCPolicy
from ...relative_actions import ACTION_IS_PAD, action_window, inference_origin

DIAGNOSTIC_FRAMES = 256  # a few hundred frames: seconds for a study-sized model


def expert_actions(
    policy: ACTRelativeRTCPolicy, windows: dict[str, Tensor], frames: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The expert's actions from each of `frames` on, past the window's anchor [N, W, A], their padding mask
    [N, W], and the action commanded before each frame [N, A] (the `last_action` of `predict_action_chunk`:
    the state where the episode has none) with `relative_anchor=last_action`, None otherwise."""
    keys = [key for key in (ACTION, ACTION_IS_PAD, OBS_STATE) if key in windows]
    actions, is_pad, origin = action_window(policy.config, {key: windows[key][frames] for key in keys})
    return actions, is_pad, origin if policy.config.anchors_on_last_action else None


def partner_frames(episode: Tensor, frames: Tensor, generator: torch.Generator) -> Tensor:
    """For each index of `frames`, a frame at the same progress through another episode. `episode` [N]
    holds each frame's episode id, every episode's frames contiguous and in time order."""
    ids, lengths = torch.unique_consecutive(episode, return_counts=True)
    if len(ids) != len(torch.unique(episode)):
        raise ValueError("Each episode's frames must be contiguous in `episode`.")
    if len(ids) < 2:
        raise ValueError("Swapping with another episode needs frames of at least two episodes.")
    starts = torch.cumsum(lengths, 0) - lengths
    order = torch.randperm(len(ids), generator=generator)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)  # a derangement: every episode is paired with another
    own = torch.searchsorted(starts, frames, right=True) - 1  # position of each frame's episode
    progress = (frames - starts[own]).double() / lengths[own]
    other = partner[own]
    return starts[other] + (progress * lengths[other]).long()


@torch.no_grad()
def prefix_reliance(
    policy: ACTRelativeRTCPolicy,
    windows: dict[str, Tensor],
    episode: Tensor,
    delays: Sequence[int],
    n_frames: int = DIAGNOSTIC_FRAMES,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """Prefix and observation reliance of `policy` per delay in `delays` (each > 0).

    windows: training frames as the preprocessor outputs them: `observation.*` [N, ...] and `action`
        [N, W, A], the window of the config's `action_delta_indices`;
    episode: [N] episode id of each frame (see `partner_frames`).
    Returns {delay: {"prefix_change", "observation_change", "prefix_reliance"}}.
    """
    if min(delays, default=1) < 1:
        raise ValueError(f"The prefix exists at delays > 0 only, got {list(delays)}.")
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randperm(len(episode), generator=generator)[:n_frames]
    partners = partner_frames(episode, frames, generator)
    observations = {key: value for key, value in windows.items() if key.startswith("observation.")}

    def chunk(observation_frames: Tensor, prefix_frames: Tensor, delay: int) -> Tensor:
        batch = {key: value[observation_frames] for key, value in observations.items()}
        actions, _, last_action = expert_actions(policy, windows, prefix_frames)
        predicted = policy.predict_action_chunk(batch, delay, actions[:, :delay], last_action)
        origin = inference_origin(policy.config, batch.get(OBS_STATE), last_action)
        return policy.to_model_space(predicted, origin)

    results = {}
    for delay in delays:
        own = chunk(frames, frames, delay)
        prefix_change = (chunk(frames, partners, delay) - own).abs().mean().item()
        observation_change = (chunk(partners, frames, delay) - own).abs().mean().item()
        results[delay] = {
            "prefix_change": prefix_change,
            "observation_change": observation_change,
            "prefix_reliance": prefix_change / observation_change if observation_change else float("inf"),
        }
    return results
