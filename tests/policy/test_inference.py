"""Inference: prefix-conditioned chunks in absolute action space and delay emulation in select_action."""

import pytest
import torch
from conftest import make_batch, make_policy


def _observation(policy, batch_size=2):
    batch = make_batch(policy.config, batch_size=batch_size)
    return {k: v for k, v in batch.items() if k.startswith("observation.")}


def test_predicted_chunk_is_absolute_state_plus_relative_prediction():
    policy = make_policy()
    observation = _observation(policy)
    chunk = policy.predict_action_chunk(observation)
    state = observation["observation.state"]
    prefix = torch.zeros(2, policy.config.rtc_max_delay, 4)
    relative = policy.model(observation, prefix, torch.zeros(2, dtype=torch.long))[0]
    assert chunk.shape == (2, policy.config.chunk_size, 4)
    assert torch.allclose(chunk, relative + state[:, None])


def test_the_prefix_changes_the_prediction():
    policy = make_policy()
    observation = _observation(policy)
    prefix = torch.randn(2, 2, 4)
    with_prefix = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix)
    other_prefix = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix + 1)
    assert not torch.allclose(with_prefix, other_prefix)


@pytest.mark.parametrize(
    ("delay", "prefix_length", "message"),
    [
        (4, 4, "outside the delays"),
        (2, 1, r"needs an action_prefix of shape \[batch, 2"),
        (0, 2, "pass delay=2"),
    ],
)
def test_bad_delay_or_prefix_is_a_clear_error(delay, prefix_length, message):
    policy = make_policy()
    prefix = torch.zeros(2, prefix_length, 4)
    with pytest.raises(ValueError, match=message):
        policy.predict_action_chunk(_observation(policy), delay=delay, action_prefix=prefix)


def test_a_delay_without_prefix_is_a_clear_error():
    policy = make_policy()
    with pytest.raises(ValueError, match="needs an action_prefix"):
        policy.predict_action_chunk(_observation(policy), delay=1)


def _record_inference_calls(policy):
    calls = []
    original = policy.predict_action_chunk

    def recording(batch, delay=0, action_prefix=None):
        chunk = original(batch, delay=delay, action_prefix=action_prefix)
        calls.append({"delay": delay, "prefix": action_prefix, "chunk": chunk})
        return chunk

    policy.predict_action_chunk = recording
    return calls


def test_select_action_requests_the_next_chunk_when_delay_actions_remain_and_uses_them_as_prefix():
    policy = make_policy(chunk_size=5, n_action_steps=4, rtc_inference_delay=2)
    calls = _record_inference_calls(policy)
    observation = _observation(policy)
    executed = [policy.select_action(observation) for _ in range(10)]

    # Chunk 1 (delay 0) at step 0; when 2 of its 4 actions remain (step 2), chunk 2 with those 2 as prefix;
    # its 4 actions follow the prefix, so chunk 3 is requested at step 6, chunk 4 at step 10.
    assert [call["delay"] for call in calls] == [0, 2, 2]
    first, second = calls[0]["chunk"], calls[1]["chunk"]
    assert torch.equal(calls[1]["prefix"], first[:, 2:4])
    assert all(torch.equal(executed[i], first[:, i]) for i in range(4))
    assert all(torch.equal(executed[4 + i], second[:, i]) for i in range(4))


def test_discard_mode_ignores_the_prefix_and_drops_the_first_delay_actions():
    policy = make_policy(chunk_size=8, n_action_steps=4, rtc_inference_delay=3, rtc_inference_mode="discard")
    calls = _record_inference_calls(policy)
    observation = _observation(policy)
    executed = [policy.select_action(observation) for _ in range(8)]

    # Requests at steps 0, 1 (3 of 4 actions left) and 5: never with a prefix.
    assert [(call["delay"], call["prefix"]) for call in calls] == [(0, None)] * 3
    second = calls[1]["chunk"]
    assert all(torch.equal(executed[4 + i], second[:, 3 + i]) for i in range(4))


def test_reset_starts_the_next_episode_with_delay_zero():
    policy = make_policy(chunk_size=5, n_action_steps=4, rtc_inference_delay=2)
    calls = _record_inference_calls(policy)
    observation = _observation(policy)
    for _ in range(3):
        policy.select_action(observation)
    policy.reset()
    policy.select_action(observation)
    assert [call["delay"] for call in calls] == [0, 2, 0]


def test_temporal_ensembling_still_works_at_delay_zero():
    policy = make_policy(chunk_size=5, n_action_steps=1, temporal_ensemble_coeff=0.01)
    observation = _observation(policy)
    actions = [policy.select_action(observation) for _ in range(3)]
    assert all(action.shape == (2, 4) for action in actions)


def test_lerobot_rtc_runtime_call_returns_the_left_over_prefix_then_the_conditioned_chunk():
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    left_over = torch.randn(6, 4)  # [T, A], as the runtime passes it
    assert policy.supports_rtc()

    chunk = policy.predict_action_chunk(observation, inference_delay=2, prev_chunk_left_over=left_over)

    conditioned = policy.predict_action_chunk(observation, delay=2, action_prefix=left_over[None, :2])
    assert chunk.shape == (1, policy.config.chunk_size, 4)
    assert torch.equal(chunk[0, :2], left_over[:2])
    assert torch.equal(chunk[:, 2:], conditioned[:, : policy.config.chunk_size - 2])


def test_lerobot_rtc_runtime_first_chunk_and_excess_delay():
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    first = policy.predict_action_chunk(observation, inference_delay=0, prev_chunk_left_over=None)
    assert torch.equal(first, policy.predict_action_chunk(observation))
    left_over = torch.randn(6, 4)
    clamped = policy.predict_action_chunk(observation, inference_delay=9, prev_chunk_left_over=left_over)
    expected = policy.predict_action_chunk(observation, delay=3, action_prefix=left_over[None, :3])
    assert torch.equal(clamped[:, 3:], expected[:, : policy.config.chunk_size - 3])


def test_lerobot_06_rtc_runtime_accepts_the_policy():
    runtime = pytest.importorskip("lerobot.rollout.inference.rtc", reason="LeRobot's RTC runtime is 0.6+")
    assert runtime.supports_rtc_inference(make_policy())
