"""`relative_anchor=last_action`: relative actions measured from the action commanded just before the
observation, in training, in `select_action` and in LeRobot 0.6's real-time runtime."""

import numpy as np
import pytest
import torch
from conftest import make_batch, make_policy, tiny_config
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_policy_act_rtc_alldelays.dataset_derived import init_from_columns
from lerobot_policy_act_rtc_alldelays.relative_actions import last_action_origins

ANCHORED = dict(relative_anchor="last_action", rtc_max_delay=2, chunk_size=5, n_action_steps=3)


def observation(policy, batch_size: int = 1) -> dict[str, torch.Tensor]:
    batch = make_batch(policy.config, batch_size=batch_size, seed=7)
    return {key: value for key, value in batch.items() if key.startswith("observation.")}


def test_the_anchor_must_be_a_known_one_and_needs_relative_actions():
    with pytest.raises(ValueError, match="`relative_anchor` must be one of"):
        tiny_config(relative_anchor="previous")
    with pytest.raises(ValueError, match="Set `--policy.predict_relative_actions=true`"):
        tiny_config(relative_anchor="last_action", predict_relative_actions=False)


def test_the_training_window_starts_with_the_action_before_the_first_one():
    assert tiny_config(**ANCHORED).action_delta_indices == [-1, *range(7)]
    assert tiny_config(**{**ANCHORED, "first_action_index": 1}).action_delta_indices == [0, *range(1, 8)]
    assert tiny_config(**{**ANCHORED, "relative_anchor": "state"}).action_delta_indices == list(range(7))


def test_training_measures_the_window_from_its_anchor_or_from_the_state_where_the_dataset_padded_it():
    policy = make_policy(**ANCHORED)
    batch = make_batch(policy.config, batch_size=2, pad_tail=0)
    batch[f"{ACTION}_is_pad"][1, 0] = True  # sample 1 is an episode's first frame: no action before it
    window, window_is_pad = policy._training_window(batch)  # unit statistics: plain differences
    assert window.shape == (2, 7, 4) and not window_is_pad.any()
    assert torch.allclose(window[0], batch[ACTION][0, 1:] - batch[ACTION][0, 0])
    assert torch.allclose(window[1], batch[ACTION][1, 1:] - batch[OBS_STATE][1])


def test_a_window_without_its_anchor_is_refused_naming_the_anchor():
    policy = make_policy(**ANCHORED)
    batch = make_batch(make_policy(**{**ANCHORED, "relative_anchor": "state"}).config)
    expected = r"the anchor action, then rtc_max_delay \+ chunk_size = 7 actions per sample \(\[batch, 8,"
    with pytest.raises(ValueError, match=expected):
        policy.forward(batch)


def test_the_statistics_measure_each_window_from_the_action_before_it_or_the_first_frames_state():
    episode = np.array([0, 0, 0, 1, 1])
    state = np.arange(5, dtype=np.float64)[:, None] * 10
    action = np.arange(5, dtype=np.float64)[:, None]
    origins = last_action_origins(episode, state, action, anchor_offset=-1)
    assert origins[:, 0].tolist() == [0.0, 0.0, 1.0, 30.0, 3.0]

    policy = make_policy(**ANCHORED)
    columns = {"episode_index": episode, OBS_STATE: np.repeat(state, 4, 1), ACTION: np.repeat(action, 4, 1)}
    init_from_columns(policy, columns)
    from_state = make_policy(**{**ANCHORED, "relative_anchor": "state"})
    init_from_columns(from_state, columns)
    # Commands lead the state here by far less than the state's own scale: other statistics, other data.
    assert policy.relative_action_normalizer.std[0] < from_state.relative_action_normalizer.std[0]
    assert not torch.equal(policy.stats_fingerprint, from_state.stats_fingerprint)


def test_a_chunk_moves_with_the_last_action_it_is_measured_from():
    policy = make_policy(**ANCHORED).eval()
    obs = observation(policy)
    last_action = torch.randn(1, 4)
    chunk = policy.predict_action_chunk(obs, last_action=last_action)
    moved = policy.predict_action_chunk(obs, last_action=last_action + 0.5)
    torch.testing.assert_close(moved, chunk + 0.5)
    # Before an episode's first chunk nothing was commanded: the chunk is measured from the state.
    torch.testing.assert_close(
        policy.predict_action_chunk(obs), policy.predict_action_chunk(obs, last_action=obs[OBS_STATE])
    )


def test_the_state_anchor_does_not_read_a_last_action():
    policy = make_policy(**{**ANCHORED, "relative_anchor": "state"}).eval()
    obs = observation(policy)
    assert torch.equal(
        policy.predict_action_chunk(obs, last_action=torch.randn(1, 4)), policy.predict_action_chunk(obs)
    )


def test_a_last_action_of_the_wrong_shape_is_refused():
    policy = make_policy(**ANCHORED).eval()
    with pytest.raises(ValueError, match=r"last_action must be \[batch, action_dim\] = \[1, 4\]"):
        policy.predict_action_chunk(observation(policy), last_action=torch.randn(4))


@pytest.mark.parametrize("mode", ["prefix", "discard"])
def test_select_action_measures_each_chunk_from_the_action_it_returned_last(mode):
    policy = make_policy(**ANCHORED, rtc_inference_mode=mode, rtc_inference_delay=2).eval()
    seen = []
    predict = policy.predict_action_chunk

    def recording(batch, delay=0, action_prefix=None, last_action=None, **kwargs):
        seen.append(last_action)
        return predict(batch, delay, action_prefix, last_action, **kwargs)

    policy.predict_action_chunk = recording
    obs = observation(policy)
    returned, requested_at = [], []
    for step in range(6):
        before = len(seen)
        returned.append(policy.select_action(obs))
        requested_at += [step] * (len(seen) - before)
    assert requested_at == [0, 1, 4]  # a chunk whenever `delay` actions remain queued
    assert seen[0] is None  # the episode's first chunk: measured from the state
    for step, last_action in zip(requested_at[1:], seen[1:], strict=True):
        assert torch.equal(last_action, returned[step - 1])
    policy.reset()
    policy.select_action(obs)
    assert seen[-1] is None


def test_the_runtime_measures_a_chunk_from_the_action_executed_before_its_left_over():
    policy = make_policy(**ANCHORED, rtc_inference_mode="prefix").eval()
    obs = observation(policy)
    first = policy.predict_action_chunk(obs, inference_delay=0, prev_chunk_left_over=None)  # [1, 5, 4]
    seen = []
    predict = policy.predict_action_chunk

    def recording(batch, delay=0, action_prefix=None, last_action=None):
        seen.append(last_action)
        return predict(batch, delay, action_prefix, last_action)

    policy.predict_action_chunk = recording
    left_over = torch.cat([first[0, 3:], torch.zeros(3, 4)])  # rows 3.. unexecuted, zero-padded to 5
    policy.rtc_runtime.predict(policy, obs, 2, left_over)
    assert torch.equal(seen[-1], first[:, 2])


def test_the_runtime_measures_from_the_state_and_warns_when_the_left_over_continues_no_chunk(caplog):
    policy = make_policy(**ANCHORED, rtc_inference_mode="prefix").eval()
    obs = observation(policy)
    policy.predict_action_chunk(obs, inference_delay=0, prev_chunk_left_over=None)
    chunk = policy.predict_action_chunk(obs, inference_delay=2, prev_chunk_left_over=torch.randn(3, 4))
    assert "the action executed before it is unknown: measuring this chunk from the state" in caplog.text
    assert chunk.shape == (1, 7, 4)


def test_an_anchored_policy_trains():
    policy = make_policy(**ANCHORED).train()
    loss, _ = policy.forward(make_batch(policy.config))
    loss.backward()
    assert torch.isfinite(loss)
