"""Inference: prefix-conditioned chunks, their action space, input checks, delay emulation in select_action,
the chunk-start hook and the call of LeRobot 0.6's real-time runtime (padding of its left-over included)."""

import logging

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
    policy = make_policy(
        chunk_size=8, n_action_steps=4, rtc_inference_delay=3, rtc_inference_mode="discard", rtc_blend_steps=0
    )
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


def test_with_relative_actions_off_chunk_and_prefix_live_in_the_normalized_space_of_the_postprocessor():
    policy = make_policy(predict_relative_actions=False)
    observation = _observation(policy)
    prefix = torch.randn(2, 2, 4)
    chunk = policy.predict_action_chunk(observation, delay=2, action_prefix=prefix)
    # The prefix reaches the model untouched (no state subtracted) and the chunk is the model's raw output.
    model_prefix = torch.cat([prefix, torch.zeros(2, 1, 4)], dim=1)
    raw = policy.model(observation, model_prefix, torch.full((2,), 2))[0]
    assert torch.equal(chunk, raw)
    # The postprocessor then maps it to robot actions with the dataset's mean and std.
    from lerobot_policy_act_rtc_alldelays import make_act_relative_rtc_alldelays_pre_post_processors

    stats = {"action": {"mean": torch.full((4,), 10.0), "std": torch.full((4,), 2.0)}}
    _, postprocessor = make_act_relative_rtc_alldelays_pre_post_processors(policy.config, dataset_stats=stats)
    assert torch.allclose(postprocessor(chunk), chunk * 2.0 + 10.0)


def test_with_relative_actions_on_the_prefix_is_absolute():
    policy = make_policy()
    observation = _observation(policy)
    state = observation["observation.state"]
    relative = torch.randn(2, 2, 4)
    chunk = policy.predict_action_chunk(observation, delay=2, action_prefix=relative + state[:, None])
    model_prefix = torch.cat([relative, torch.zeros(2, 1, 4)], dim=1)  # unit stats: normalized = relative
    expected = policy.model(observation, model_prefix, torch.full((2,), 2))[0] + state[:, None]
    assert torch.allclose(chunk, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (torch.tensor([[[0.0, float("nan"), 0.0, 0.0], [0.0] * 4]]).expand(2, -1, -1), "NaN or inf"),
        (torch.tensor([[[0.0, float("inf"), 0.0, 0.0], [0.0] * 4]]).expand(2, -1, -1), "NaN or inf"),
        (torch.zeros(2, 2, 1), r"needs \[2, 2, 4\]"),  # would broadcast silently
        (torch.zeros(2, 2, 5), r"needs \[2, 2, 4\]"),
        (torch.zeros(1, 2, 4), r"one prefix per observation \(batch 2\)"),  # would broadcast silently
        (torch.zeros(2, 4), r"must be \[batch, delay, action_dim\]"),
    ],
    ids=["nan", "inf", "action-size-1", "action-size-5", "batch-1-for-2", "no-batch-dim"],
)
def test_a_bad_action_prefix_is_a_clear_error(prefix, message):
    policy = make_policy()
    with pytest.raises(ValueError, match=message):
        policy.predict_action_chunk(_observation(policy), delay=2, action_prefix=prefix)


@pytest.mark.parametrize("missing", ["observation.state", "observation.images.wrist"])
def test_an_observation_missing_an_input_is_a_clear_error(missing):
    policy = make_policy()
    observation = _observation(policy)
    del observation[missing]
    with pytest.raises(ValueError, match=rf"lacks \['{missing}'\]"):
        policy.predict_action_chunk(observation)


def test_an_observation_without_batch_dimension_or_with_mixed_batches_is_a_clear_error():
    policy = make_policy()
    observation = _observation(policy)
    unbatched = {key: value[0] for key, value in observation.items()}
    with pytest.raises(ValueError, match="need a batch dimension"):
        policy.predict_action_chunk(unbatched)
    observation["observation.state"] = observation["observation.state"][:1]
    with pytest.raises(ValueError, match="disagree on the batch size"):
        policy.predict_action_chunk(observation)


def test_without_relative_actions_and_state_token_the_state_is_not_needed():
    policy = make_policy(predict_relative_actions=False, use_state_token=False)
    observation = _observation(policy)
    del observation["observation.state"]
    assert policy.predict_action_chunk(observation).shape == (2, policy.config.chunk_size, 4)


def test_on_chunk_start_receives_the_step_of_each_chunks_first_action():
    policy = make_policy(chunk_size=5, n_action_steps=4, rtc_inference_delay=2)
    starts = []
    policy.on_chunk_start = starts.append
    observation = _observation(policy)
    for _ in range(10):
        policy.select_action(observation)
    # Chunks of 4 actions, the next requested 2 actions early: each starts where the previous one ends.
    assert starts == [0, 4, 8]
    policy.reset()
    policy.select_action(observation)
    assert starts == [0, 4, 8, 0]


def test_config_tells_which_inference_settings_are_valid_without_changing():
    config = make_policy(chunk_size=8, n_action_steps=5, rtc_max_delay=2).config
    assert config.inference_setting_error("prefix", 2) is None
    assert "exceeds `rtc_max_delay`" in config.inference_setting_error("prefix", 3)
    assert config.inference_setting_error("discard", 3) is None
    assert "discard mode" in config.inference_setting_error("discard", 4)
    assert (config.rtc_inference_mode, config.rtc_inference_delay) == ("prefix", 0)


# ---- LeRobot 0.6 real-time runtime: predict_action_chunk(batch, inference_delay=, prev_chunk_left_over=)
def _runtime_call(policy, observation, inference_delay, left_over):
    return policy.predict_action_chunk(
        observation, inference_delay=inference_delay, prev_chunk_left_over=left_over
    )


def _pad(rows, length=10):
    """The runtime's `_normalize_prev_actions_length`: zero rows up to `execution_horizon`."""
    return torch.cat([rows, torch.zeros(length - rows.shape[0], rows.shape[1])])


def test_lerobot_rtc_runtime_call_returns_the_left_over_prefix_then_the_conditioned_chunk():
    policy = make_policy(rtc_blend_steps=0)  # blending: test_blending
    observation = _observation(policy, batch_size=1)
    left_over = torch.randn(6, 4)  # [T, A], as the runtime passes it
    assert policy.supports_rtc()

    chunk = _runtime_call(policy, observation, 2, left_over)

    conditioned = policy.predict_action_chunk(observation, delay=2, action_prefix=left_over[None, :2])
    assert chunk.shape == (1, 2 + policy.config.chunk_size, 4)  # every predicted action survives the skip
    assert torch.equal(chunk[0, :2], left_over[:2])
    assert torch.equal(chunk[:, 2:], conditioned)


def test_lerobot_rtc_runtime_first_chunk_is_the_plain_prediction():
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    assert torch.equal(_runtime_call(policy, observation, 0, None), policy.predict_action_chunk(observation))
    assert torch.equal(_runtime_call(policy, observation, 2, None), policy.predict_action_chunk(observation))


def test_lerobot_rtc_runtime_in_discard_mode_returns_the_plain_chunk_for_the_runtime_to_skip_into():
    policy = make_policy(rtc_inference_mode="discard", rtc_blend_steps=0)  # blending: test_blending
    observation = _observation(policy, batch_size=1)

    chunk = _runtime_call(policy, observation, 2, torch.randn(6, 4))

    assert torch.equal(chunk, policy.predict_action_chunk(observation))


@pytest.mark.parametrize("n_real", [1, 2])
def test_padding_of_a_nearly_empty_left_over_never_becomes_prefix_nor_action(n_real):
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    previous = _runtime_call(policy, observation, 0, None)[0]  # [chunk, A], what the runtime queues
    real = previous[-n_real:]  # all but n_real actions executed

    padded_answer = _runtime_call(policy, observation, 3, _pad(real))
    real_answer = _runtime_call(policy, observation, 3, real)

    assert torch.equal(padded_answer, real_answer)
    assert torch.equal(padded_answer[0, :n_real], real)
    expected = policy.predict_action_chunk(observation, delay=n_real, action_prefix=real[None])
    assert torch.equal(padded_answer[:, n_real:], expected)
    assert padded_answer.shape[1] == n_real + policy.config.chunk_size
    assert padded_answer.abs().sum(dim=-1).min() > 0  # no all-zero action comes back


def test_padding_of_an_empty_left_over_gives_the_plain_prediction():
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    _runtime_call(policy, observation, 0, None)  # a chunk the runtime then consumed entirely
    answer = _runtime_call(policy, observation, 3, torch.zeros(10, 4))
    assert torch.equal(answer, policy.predict_action_chunk(observation))


def test_padding_is_told_from_real_rows_by_position_not_by_value():
    """A real all-zero action (a legitimate absolute target on some robots) inside the left-over is kept."""
    policy = make_policy()
    observation = _observation(policy, batch_size=1)
    given = torch.stack([torch.randn(4), torch.randn(4), torch.zeros(4)])
    chunk = _runtime_call(policy, observation, 3, given)[0]  # [x, y, 0, predicted...]: 8 rows
    left_over = chunk[2:]  # two actions executed; the zero action is next
    answer = _runtime_call(policy, observation, 3, _pad(left_over))
    assert torch.equal(answer[0, :3], left_over[:3])
    assert torch.equal(answer, _runtime_call(policy, observation, 3, left_over))


def test_a_delay_beyond_rtc_max_delay_still_predicts_and_names_the_limit(caplog):
    policy = make_policy(rtc_max_delay=3, chunk_size=5, rtc_blend_steps=0)
    observation = _observation(policy, batch_size=1)
    left_over = torch.randn(8, 4)
    with caplog.at_level(logging.WARNING):
        chunk = _runtime_call(policy, observation, 6, left_over)
    expected = policy.predict_action_chunk(observation, delay=3, action_prefix=left_over[None, :3])
    assert torch.equal(chunk[:, 3:], expected)  # all 5 predicted actions, after the 3-action prefix
    assert "exceeds rtc_max_delay=3" in caplog.text
    assert "ran dry" not in caplog.text


def test_a_delay_beyond_the_real_left_over_names_that_limit(caplog):
    policy = make_policy(rtc_max_delay=3)
    observation = _observation(policy, batch_size=1)
    previous = _runtime_call(policy, observation, 0, None)[0]
    with caplog.at_level(logging.WARNING):
        chunk = _runtime_call(policy, observation, 3, _pad(previous[-1:]))
    assert chunk.shape[1] == 1 + policy.config.chunk_size
    assert "only 1 real actions were left" in caplog.text
    assert "exceeds rtc_max_delay" not in caplog.text


def test_a_delay_beyond_the_whole_chunk_is_logged(caplog):
    policy = make_policy(rtc_max_delay=3, chunk_size=5)
    observation = _observation(policy, batch_size=1)
    with caplog.at_level(logging.WARNING):
        _runtime_call(policy, observation, 9, torch.randn(10, 4))
    assert "skips all of them" in caplog.text


@pytest.mark.parametrize(
    ("left_over", "message"),
    [
        (torch.full((6, 4), float("nan")), "NaN or inf"),
        (torch.zeros(6, 5), "action_dim=4"),
        (torch.zeros(2, 6, 4), "batch=1"),
    ],
    ids=["nan", "action-size", "batch"],
)
def test_a_bad_left_over_is_a_clear_error(left_over, message):
    policy = make_policy()
    with pytest.raises(ValueError, match=message):
        _runtime_call(policy, _observation(policy, batch_size=1), 2, left_over)


def test_lerobot_06_rtc_runtime_accepts_the_policy():
    runtime = pytest.importorskip("lerobot.rollout.inference.rtc", reason="LeRobot's RTC runtime is 0.6+")
    assert runtime.supports_rtc_inference(make_policy())
