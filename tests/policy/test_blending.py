"""Blending at the join (`rtc_blend_steps`): by default over half of the steps consecutive chunks overlap,
nothing where they do not; with k > 0 a new chunk's first k actions mix the previous chunk's predictions for
the same steps, in `select_action` and in LeRobot 0.6's runtime call; the committed actions and an episode's
first chunk are never blended; checkpoints of earlier releases run unblended; bad values are refused."""

import json

import pytest
import torch
from conftest import make_batch, make_policy, tiny_config
from lerobot.configs.policies import PreTrainedConfig

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.blending import blend_join

# A chunk of 8 executing 4 actions: 4 predicted past them, enough to blend over 2 or 3 steps at delay 2.
SIZES = dict(chunk_size=8, n_action_steps=4, rtc_max_delay=3)


def _observation(policy, seed=0, batch_size=2):
    batch = make_batch(policy.config, batch_size=batch_size, seed=seed)
    return {k: v for k, v in batch.items() if k.startswith("observation.")}


def _run(policy, n_steps, first_seed=0):
    """`n_steps` calls of select_action, each with a new observation (so that chunks differ); returns the
    executed actions and each predicted chunk [B, chunk_size, A] with the prefix it was conditioned on."""
    calls = []
    original = policy.predict_action_chunk

    def recording(batch, delay=0, action_prefix=None):
        chunk = original(batch, delay=delay, action_prefix=action_prefix)
        calls.append({"prefix": action_prefix, "chunk": chunk})
        return chunk

    policy.predict_action_chunk = recording
    executed = [policy.select_action(_observation(policy, seed=first_seed + step)) for step in range(n_steps)]
    return executed, [call["chunk"] for call in calls], [call["prefix"] for call in calls]


def _mix(previous, new, weight):
    return weight * previous + (1 - weight) * new


@pytest.mark.parametrize(
    ("mode", "delay", "first_row"),
    [("prefix", 2, 0), ("discard", 2, 2), ("discard", 0, 0)],
    ids=["prefix", "discard", "delay-0"],
)
def test_zero_blend_steps_leave_every_action_the_chunks_own(mode, delay, first_row):
    policy = make_policy(**SIZES, rtc_inference_mode=mode, rtc_inference_delay=delay, rtc_blend_steps=0)
    executed, chunks, _ = _run(policy, 12)
    # Chunk c executes from step 4c, its rows first_row.. (the first chunk of the episode from row 0).
    for step, action in enumerate(executed):
        chunk, row = divmod(step, 4)
        assert torch.equal(action, chunks[chunk][:, row + (first_row if chunk else 0)])


def test_by_default_a_join_is_blended_over_half_of_the_overlap():
    # Chunk 8 executing 4: 4 steps predicted past the ones executed, so k = 2.
    policy = make_policy(**SIZES, rtc_inference_mode="prefix", rtc_inference_delay=2)
    assert policy.config.rtc_blend_steps is None and policy.config.blend_steps == 2
    executed, (first, second, _), _ = _run(policy, 10)
    assert torch.allclose(executed[4], _mix(first[:, 4], second[:, 0], 2 / 3))
    assert torch.allclose(executed[5], _mix(first[:, 5], second[:, 1], 1 / 3))
    assert torch.equal(executed[6], second[:, 2])


@pytest.mark.parametrize(
    "fields",
    [
        dict(chunk_size=8, n_action_steps=8),
        dict(chunk_size=8, n_action_steps=1, temporal_ensemble_coeff=0.01),
    ],
    ids=["chunks-do-not-overlap", "temporal-ensembling"],
)
def test_by_default_nothing_is_blended_and_nothing_refused_where_chunks_do_not_join(fields):
    policy = make_policy(**fields)
    assert policy.config.blend_steps == 0


def test_the_default_blend_is_half_of_the_overlap_for_any_chunking():
    # The defaults (chunk 100 executing 50), the studies' chunking, a short overlap, ACT's 100 of 100.
    for (chunk_size, n_action_steps), k in {(100, 50): 25, (18, 9): 4, (8, 7): 0, (100, 100): 0}.items():
        config = tiny_config(chunk_size=chunk_size, n_action_steps=n_action_steps, rtc_max_delay=3)
        assert config.blend_steps == k, (chunk_size, n_action_steps)


def test_the_first_k_actions_after_a_join_mix_the_two_chunks_in_prefix_mode():
    policy = make_policy(**SIZES, rtc_inference_mode="prefix", rtc_inference_delay=2, rtc_blend_steps=2)
    executed, (first, second, third), _ = _run(policy, 10)
    # The second chunk executes from step 4, its row 0; the first chunk predicted step 4 + i at row 4 + i.
    # Weights of the previous chunk: (k - i) / (k + 1) = 2/3, 1/3; then the new chunk alone.
    assert torch.allclose(executed[4], _mix(first[:, 4], second[:, 0], 2 / 3))
    assert torch.allclose(executed[5], _mix(first[:, 5], second[:, 1], 1 / 3))
    assert torch.equal(executed[6], second[:, 2])
    assert torch.equal(executed[7], second[:, 3])
    # The next join blends with the second chunk's own predictions, not with the blended actions.
    assert torch.allclose(executed[8], _mix(second[:, 4], third[:, 0], 2 / 3))
    assert torch.allclose(executed[9], _mix(second[:, 5], third[:, 1], 1 / 3))


def test_the_first_k_actions_after_a_join_mix_the_two_chunks_in_discard_mode():
    policy = make_policy(**SIZES, rtc_inference_mode="discard", rtc_inference_delay=2, rtc_blend_steps=2)
    executed, (first, second, third), _ = _run(policy, 10)
    # The second chunk, predicted at step 2, executes its rows 2.. from step 4 (rows 0-1 were due during
    # inference); the first chunk, predicted at step 0, holds step 4 + i at row 4 + i.
    assert torch.allclose(executed[4], _mix(first[:, 4], second[:, 2], 2 / 3))
    assert torch.allclose(executed[5], _mix(first[:, 5], second[:, 3], 1 / 3))
    assert torch.equal(executed[6], second[:, 4])
    # The third, predicted at step 6, executes rows 2.. from step 8, where the second has row 6.
    assert torch.allclose(executed[8], _mix(second[:, 6], third[:, 2], 2 / 3))
    assert torch.allclose(executed[9], _mix(second[:, 7], third[:, 3], 1 / 3))


def test_at_delay_zero_the_chunk_requested_on_an_empty_queue_is_blended():
    policy = make_policy(**SIZES, rtc_inference_mode="discard", rtc_inference_delay=0, rtc_blend_steps=3)
    executed, (first, second), _ = _run(policy, 8)
    assert torch.allclose(executed[4], _mix(first[:, 4], second[:, 0], 3 / 4))
    assert torch.allclose(executed[5], _mix(first[:, 5], second[:, 1], 2 / 4))
    assert torch.allclose(executed[6], _mix(first[:, 6], second[:, 2], 1 / 4))
    assert torch.equal(executed[7], second[:, 3])


def test_the_committed_actions_execute_unchanged_and_are_the_prefix_in_prefix_mode():
    # k = 3 > n_action_steps - delay: the second chunk's blended third action is committed to the third.
    policy = make_policy(**SIZES, rtc_inference_mode="prefix", rtc_inference_delay=2, rtc_blend_steps=3)
    executed, (first, second, _), prefixes = _run(policy, 10)
    # While the second chunk was inferred (steps 2-3), the first chunk's queued actions executed as queued.
    assert torch.equal(executed[2], first[:, 2]) and torch.equal(executed[3], first[:, 3])
    assert torch.equal(prefixes[1], torch.stack(executed[2:4], dim=1))
    # While the third was inferred (steps 6-7), what executed is exactly the prefix it was conditioned on:
    # the second chunk's actions as they were queued (the blended one included), never blended again.
    assert torch.equal(prefixes[2], torch.stack(executed[6:8], dim=1))
    assert torch.allclose(executed[6], _mix(first[:, 6], second[:, 2], 1 / 4))
    assert torch.equal(executed[7], second[:, 3])


def test_the_first_chunk_after_reset_is_not_blended():
    policy = make_policy(**SIZES, rtc_inference_mode="discard", rtc_inference_delay=0, rtc_blend_steps=3)
    _run(policy, 6)  # past a join: the policy holds the second chunk's predictions for steps 8..
    policy.reset()
    executed, (first,), _ = _run(policy, 4, first_seed=100)
    assert all(torch.equal(executed[step], first[:, step]) for step in range(4))


def _as_earlier_release(tmp_path, **fields):
    """A checkpoint as a release before smooth joins saved it: no blending, every delay weighted alike, and
    neither field in its config.json."""
    saved = make_policy(**SIZES, rtc_blend_steps=0, rtc_delay0_loss_share=None, **fields)
    saved.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["rtc_blend_steps"], config["rtc_delay0_loss_share"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    return saved


def test_a_checkpoint_of_an_earlier_release_loads_unblended_and_predicts_as_before(tmp_path):
    saved = _as_earlier_release(tmp_path, rtc_inference_mode="prefix", rtc_inference_delay=2)

    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path)

    assert (loaded.config.rtc_blend_steps, loaded.config.rtc_delay0_loss_share) == (0, None)
    before, _, _ = _run(saved, 10)
    after, _, _ = _run(loaded, 10)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_checkpoint_of_an_earlier_release_trains_on_with_every_delay_weighted_alike(tmp_path):
    saved = _as_earlier_release(tmp_path)
    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path)
    batch = make_batch(saved.config)
    for policy in (saved, loaded):
        policy.train()
    torch.manual_seed(0)
    expected, _ = saved.forward(batch)
    torch.manual_seed(0)
    loss, _ = loaded.forward(batch)
    torch.testing.assert_close(loss, expected)


def test_a_blend_asked_for_when_loading_an_earlier_release_is_kept(tmp_path):
    _as_earlier_release(tmp_path)
    config = PreTrainedConfig.from_pretrained(tmp_path)
    config.rtc_blend_steps = 2  # as `--policy.rtc_blend_steps=2` sets it

    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(tmp_path, config=config)

    assert loaded.config.rtc_blend_steps == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            dict(rtc_blend_steps=-1),
            r"`rtc_blend_steps` counts the actions .* must be an integer >= 0 \(0: no blending\) or null "
            r"\(half of the overlap\), got -1",
        ),
        (dict(rtc_blend_steps=1.5), r"must be an integer >= 0 \(0: no blending\) or null .*, got 1\.5"),
        (dict(rtc_blend_steps=True), r"must be an integer >= 0 \(0: no blending\) or null .*, got True"),
        (
            dict(chunk_size=8, n_action_steps=2, rtc_blend_steps=3),
            r"`rtc_blend_steps` \(3\) exceeds `n_action_steps` \(2\): the blend must end before the next "
            r"chunk takes over.* Lower `--policy.rtc_blend_steps`",
        ),
        (
            dict(chunk_size=5, n_action_steps=5, rtc_blend_steps=1),
            r"`rtc_blend_steps` \(1\) exceeds the 0 actions a chunk predicts past the ones it executes "
            r"\(chunk_size=5 - n_action_steps=5\).* Lower `--policy.rtc_blend_steps` or "
            r"`--policy.n_action_steps`",
        ),
        (
            dict(chunk_size=5, n_action_steps=1, temporal_ensemble_coeff=0.01, rtc_blend_steps=1),
            r"Temporal ensembling already averages .* set `--policy.rtc_blend_steps=0`",
        ),
    ],
    ids=["negative", "float", "bool", "past-n-action-steps", "no-overlap", "ensembling"],
)
def test_a_bad_blend_is_refused_naming_the_limit_and_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        make_policy(**fields)


def test_a_shorter_overlap_is_blended_over_the_rows_both_chunks_have():
    """Discard mode at delay 3 leaves the previous chunk one row past the join (8 - 4 - 3): k=3 shrinks
    to that row, with the weight of k=1 (1/2), and the new chunk is alone from the next row on."""
    new, previous = torch.full((1, 4, 2), 10.0), torch.zeros(1, 1, 2)
    blended = blend_join(new, previous, 0, 3)
    torch.testing.assert_close(blended[0, :, 0], torch.tensor([5.0, 10.0, 10.0, 10.0]))


def test_a_blend_runs_at_every_discard_delay_the_mode_allows():
    policy = make_policy(**SIZES, rtc_inference_mode="prefix", rtc_inference_delay=2, rtc_blend_steps=3)
    policy.config.set_inference_setting("discard", 3)
    assert (policy.config.rtc_inference_mode, policy.config.rtc_inference_delay) == ("discard", 3)


# ---- LeRobot 0.6's real-time runtime: predict_action_chunk(batch, inference_delay=, prev_chunk_left_over=)
def _runtime_call(policy, observation, inference_delay, left_over):
    return policy.predict_action_chunk(
        observation, inference_delay=inference_delay, prev_chunk_left_over=left_over
    )


def _pad(rows, length=10):
    """The runtime's `_normalize_prev_actions_length`: zero rows up to `execution_horizon`."""
    return torch.cat([rows, torch.zeros(length - rows.shape[0], rows.shape[1])])


@pytest.mark.parametrize("mode", ["prefix", "discard"])
def test_the_runtime_call_blends_the_rows_after_the_delay_with_the_left_over(mode):
    policy = make_policy(**SIZES, rtc_inference_mode=mode, rtc_blend_steps=2)
    first = _runtime_call(policy, _observation(policy, batch_size=1), 0, None)[0]  # [chunk, A]
    assert torch.equal(first, policy.predict_action_chunk(_observation(policy, batch_size=1))[0])
    observation = _observation(policy, seed=1, batch_size=1)
    left_over = first[3:]  # three actions executed; rows j of left-over and answer are the same step

    answer = _runtime_call(policy, observation, 2, _pad(left_over))[0]

    if mode == "prefix":  # [the 2 committed actions, the chunk predicted after them]
        new = torch.cat([left_over[:2], policy.predict_action_chunk(observation, 2, left_over[None, :2])[0]])
    else:  # the plain chunk; the runtime skips its first 2 rows
        new = policy.predict_action_chunk(observation)[0]
    assert torch.equal(answer[:2], new[:2])  # never blended: they execute while inference runs
    assert torch.allclose(answer[2], _mix(left_over[2], new[2], 2 / 3))
    assert torch.allclose(answer[3], _mix(left_over[3], new[3], 1 / 3))
    assert torch.equal(answer[4:], new[4:])


def test_by_default_the_runtime_call_blends_over_half_of_the_real_left_over_past_the_join():
    policy = make_policy(**SIZES, rtc_inference_mode="discard")
    first = _runtime_call(policy, _observation(policy, batch_size=1), 0, None)[0]
    observation = _observation(policy, seed=1, batch_size=1)
    left_over = first[2:]  # 6 real rows; 4 of them past the join at delay 2, so k = 2

    answer = _runtime_call(policy, observation, 2, _pad(left_over))[0]

    new = policy.predict_action_chunk(observation)[0]
    assert torch.equal(answer[:2], new[:2])
    assert torch.allclose(answer[2], _mix(left_over[2], new[2], 2 / 3))
    assert torch.allclose(answer[3], _mix(left_over[3], new[3], 1 / 3))
    assert torch.equal(answer[4:], new[4:])


def test_the_runtime_padding_is_never_blended():
    policy = make_policy(**SIZES, rtc_inference_mode="discard", rtc_blend_steps=3)
    first = _runtime_call(policy, _observation(policy, batch_size=1), 0, None)[0]
    observation = _observation(policy, seed=1, batch_size=1)

    answer = _runtime_call(policy, observation, 1, _pad(first[6:]))[0]  # 2 real rows, then 8 zero rows

    new = policy.predict_action_chunk(observation)[0]
    # One real row past the join: the blend shrinks to it, with the weight of k=1.
    assert torch.allclose(answer[1], _mix(first[7], new[1], 1 / 2))
    assert torch.equal(answer[2:], new[2:])


def test_lerobot_06_runtime_queue_executes_the_blended_join():
    """LeRobot's own action queue and padding: the robot gets the committed actions, then the blend."""
    rtc_engine = pytest.importorskip("lerobot.rollout.inference.rtc", reason="LeRobot's RTC runtime is 0.6+")
    from lerobot.policies.rtc import ActionQueue, RTCConfig

    policy = make_policy(**SIZES, rtc_inference_mode="prefix", rtc_blend_steps=2)
    queue = ActionQueue(RTCConfig(execution_horizon=10))

    def engine_cycle(observation, delay):
        """One inference of the runtime's loop, the robot executing `delay` actions meanwhile."""
        index_before = queue.get_action_index()
        left_over = queue.get_left_over()
        if left_over is not None:
            left_over = rtc_engine._normalize_prev_actions_length(left_over, target_steps=10)
        chunk = _runtime_call(policy, observation, delay, left_over)[0]
        executed = [queue.get() for _ in range(delay)]
        queue.merge(chunk.clone(), chunk.clone(), delay, index_before)
        return executed

    engine_cycle(_observation(policy, batch_size=1), 0)
    first = queue.get_left_over()
    executed = [queue.get() for _ in range(3)]
    observation = _observation(policy, seed=1, batch_size=1)
    executed += engine_cycle(observation, 2)
    executed += [queue.get() for _ in range(4)]

    new = policy.predict_action_chunk(observation, 2, first[None, 3:5])[0]
    assert all(torch.equal(executed[step], first[step]) for step in range(5))
    assert torch.allclose(executed[5], _mix(first[5], new[0], 2 / 3))
    assert torch.allclose(executed[6], _mix(first[6], new[1], 1 / 3))
    assert torch.equal(executed[7], new[2]) and torch.equal(executed[8], new[3])
