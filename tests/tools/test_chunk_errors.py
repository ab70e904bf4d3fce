"""The chunk-error diagnostic: each chunk step compared with the dataset's action at the same step."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_dataset_config
from lerobot.policies.factory import make_policy as lerobot_make_policy
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_policy_act_rtc_alldelays.processor_act_relative_rtc_alldelays import (
    make_act_relative_rtc_alldelays_pre_post_processors,
)
from lerobot_policy_act_rtc_alldelays.relative_actions import ACTION_IS_PAD
from lerobot_policy_act_rtc_alldelays.tools.chunk_errors import (
    action_windows,
    chunk_errors,
    main,
)

CHUNK_SIZE = 4
MAX_DELAY = 2


class ScriptedPolicy:
    """Predicts each chunk from the frame's own action window: `shift` steps late (0: the dataset's actions
    exactly), or zeros. Anchored like `relative_anchor=last_action` if asked, recording its `last_action`s."""

    def __init__(self, shift: int | None, anchored: bool = False):
        self.config = SimpleNamespace(
            chunk_size=CHUNK_SIZE, rtc_max_delay=MAX_DELAY, anchors_on_last_action=anchored
        )
        self.shift = shift
        self.last_actions = []

    def predict_action_chunk(self, batch, delay=0, action_prefix=None, **last):
        if self.config.anchors_on_last_action:
            self.last_actions.append(last["last_action"])
        else:
            assert not last  # LeRobot's ACT takes no last_action
        window = batch[ACTION][:, 1:]  # the action before the frame comes first
        if delay:
            assert torch.equal(action_prefix, window[:, :delay])  # the dataset's next actions, as in training
        if self.shift is None:
            return torch.zeros_like(window[:, :CHUNK_SIZE])
        start = max(delay - self.shift, 0)
        return window[:, start : start + CHUNK_SIZE]


def unchanged(batch):
    return batch


@pytest.fixture(scope="module")
def windows(synthetic_dataset):
    return action_windows(synthetic_dataset.repo_id, synthetic_dataset.root, MAX_DELAY + CHUNK_SIZE)


def test_a_chunk_equal_to_the_datasets_actions_has_no_error_from_its_delay_on(windows):
    errors = chunk_errors(ScriptedPolicy(shift=0), unchanged, unchanged, windows, [0, MAX_DELAY])
    assert errors[0][:CHUNK_SIZE] == [0.0] * CHUNK_SIZE and errors[0][CHUNK_SIZE:] == [None] * MAX_DELAY
    # The delay-d chunk starts d steps after the frame: nothing before the delay is predicted.
    assert errors[MAX_DELAY][:MAX_DELAY] == [None] * MAX_DELAY
    assert errors[MAX_DELAY][MAX_DELAY:] == [0.0] * CHUNK_SIZE


def test_a_chunk_one_step_late_has_an_error_at_its_delay(windows):
    errors = chunk_errors(ScriptedPolicy(shift=1), unchanged, unchanged, windows, [MAX_DELAY])
    assert all(error > 0 for error in errors[MAX_DELAY][MAX_DELAY:])


def test_the_error_is_the_mean_absolute_action_over_real_steps_for_a_zero_chunk(windows):
    errors = chunk_errors(ScriptedPolicy(shift=None), unchanged, unchanged, windows, [0])
    frames = [windows[index] for index in range(len(windows))]
    actions = torch.stack([frame[ACTION][1:] for frame in frames])  # [N, W, A]
    real = ~torch.stack([frame[ACTION_IS_PAD][1:] for frame in frames])  # [N, W]
    # Episode ends pad the last offsets: those steps must not count.
    assert real[:, CHUNK_SIZE - 1].sum() < len(frames)
    for offset in range(CHUNK_SIZE):
        expected = actions[real[:, offset], offset].abs().mean().item()
        assert errors[0][offset] == pytest.approx(expected, rel=1e-5)


def test_a_policy_anchored_on_the_last_action_gets_the_action_before_each_frame_or_its_state(windows):
    policy = ScriptedPolicy(shift=0, anchored=True)
    chunk_errors(policy, unchanged, unchanged, windows, [0])
    last_actions = torch.cat(policy.last_actions)  # [N, A], frames in dataset order
    frames = [windows[index] for index in range(len(windows))]
    for index, frame in enumerate(frames):
        first_of_episode = bool(frame[ACTION_IS_PAD][0])
        expected = frame[OBS_STATE] if first_of_episode else frames[index - 1][ACTION][1]
        assert torch.equal(last_actions[index], expected)
    assert sum(bool(frame[ACTION_IS_PAD][0]) for frame in frames) == windows.meta.total_episodes


def test_delays_outside_the_trained_range_are_refused(windows):
    with pytest.raises(ValueError, match=r"outside the checkpoint's trained 0..rtc_max_delay \(2\)"):
        chunk_errors(ScriptedPolicy(shift=0), unchanged, unchanged, windows, [MAX_DELAY + 1])


def test_windows_too_short_for_the_delay_and_chunk_are_refused(synthetic_dataset):
    short = action_windows(synthetic_dataset.repo_id, synthetic_dataset.root, CHUNK_SIZE)
    with pytest.raises(ValueError, match=r"hold 4 actions after the frame; delay 2 with chunk_size 4 need"):
        chunk_errors(ScriptedPolicy(shift=0), unchanged, unchanged, short, [MAX_DELAY])


def test_the_cli_reports_each_checkpoint_delay_at_the_offsets_its_rollout_executes(
    synthetic_dataset, tmp_path
):
    config = tiny_dataset_config(chunk_size=CHUNK_SIZE, n_action_steps=2, rtc_max_delay=MAX_DELAY)
    policy = lerobot_make_policy(config, ds_meta=synthetic_dataset.meta)
    checkpoint = tmp_path / "pretrained_model"
    for component in (policy, *make_act_relative_rtc_alldelays_pre_post_processors(
        policy.config, synthetic_dataset.meta.stats
    )):
        component.save_pretrained(checkpoint)
    main([str(checkpoint), "--dataset-repo-id", synthetic_dataset.repo_id, "--dataset-root",
          str(synthetic_dataset.root), "--delays", "0,2", "--output-dir", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "chunk_errors.json").read_text())[0]
    assert set(report["errors"]) == {"0", "2"} and report["policy"] == config.type
    assert all(error >= 0 for error in report["errors"]["0"][:CHUNK_SIZE])
    table = (tmp_path / "out" / "chunk_errors.md").read_text()
    # The delay-2 chunk serves rollouts at delay 2 only; the delay-0 chunk serves both (plain chunking).
    assert f"| {checkpoint} | {config.type} | 2 | - |" in table
    assert f"| {checkpoint} | {config.type} | 0 | - |" not in table
