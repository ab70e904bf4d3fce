"""ACTSmooth, the peer plugin, as the study's `act_smooth` variant: refused clearly without the `peers` extra,
evaluated through its own contract (a committed prefix of the actions that execute while it infers), and
trained and reported by the study like every other variant."""

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")  # the `metaworld` extra; the study's modules import it

from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE  # noqa: E402

from lerobot_policy_act_rtc_alldelays.tools.study import act_smooth  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.act_smooth import (  # noqa: E402
    CommittedPrefixChunking,
    hold_action,
)
from lerobot_policy_act_rtc_alldelays.tools.study.evaluation import eval_settings  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.runner import run_study  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.settings import quick_settings  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.training import policy_config  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.variants import (  # noqa: E402
    ACT_SMOOTH,
    ACT_SMOOTH_TUNED,
    ACT_SMOOTH_TUNED_LR,
)

N_ACTION_STEPS, CHUNK_SIZE, ACTION_DIM = 4, 8, 2


class RecordingPeer(torch.nn.Module):
    """ACTSmooth's inference interface: each chunk is distinct (call k predicts k * 100 + step), and every
    committed prefix it receives is recorded."""

    def __init__(self, max_prefix: int):
        super().__init__()
        self.config = SimpleNamespace(length_prefix_future=max_prefix, chunk_size=CHUNK_SIZE)
        self.prefixes: list[torch.Tensor] = []

    def reset(self) -> None:
        pass

    def build_inference_action_prefix(self, future, past):
        assert past.shape[1] == 0
        return future, torch.zeros(future.shape[:2], dtype=torch.bool)

    def predict_action_chunk(self, batch):
        self.prefixes.append(batch[act_smooth.INFERENCE_ACTION].clone())
        steps = torch.arange(CHUNK_SIZE, dtype=torch.float32) + 100 * len(self.prefixes)
        return steps[None, :, None].expand(1, CHUNK_SIZE, ACTION_DIM)


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_act_smooth_is_conditioned_on_exactly_the_actions_that_execute_while_it_infers(delay):
    peer = RecordingPeer(max_prefix=3)
    first = torch.full((1, ACTION_DIM), -1.0)
    chunking = CommittedPrefixChunking(peer, delay, N_ACTION_STEPS, lambda batch: first)
    chunking.reset()
    executed, asked_at = [], []
    for step in range(4 * N_ACTION_STEPS):
        calls = len(peer.prefixes)
        executed.append(chunking.select_action({}))
        if len(peer.prefixes) > calls:
            asked_at.append(step)
    executed = torch.stack(executed, dim=1)  # [1, steps, A]
    committed = max(delay, 1)  # at delay 0, its minimum prefix: one committed action
    # The first chunk follows the episode's first committed action; later ones are asked `committed` steps
    # before the join, so every chunk takes over every N_ACTION_STEPS steps.
    assert asked_at == [0] + [k * N_ACTION_STEPS - committed for k in (1, 2, 3, 4)]
    torch.testing.assert_close(peer.prefixes[0], first[:, None])
    for step, prefix in zip(asked_at[1:], peer.prefixes[1:], strict=True):
        torch.testing.assert_close(prefix, executed[:, step : step + committed])
    for k in (1, 2, 3):  # the chunk asked for k-th starts right after its prefix, at the join
        assert executed[0, k * N_ACTION_STEPS, 0].item() == 100 * (k + 1)


def test_act_smooth_delays_beyond_its_trained_prefixes_are_refused():
    with pytest.raises(ValueError, match="length_prefix_future"):
        CommittedPrefixChunking(RecordingPeer(max_prefix=2), 3, N_ACTION_STEPS, lambda batch: None)


def test_the_first_committed_action_holds_the_hand_with_the_demos_first_gripper_command():
    stats = {
        OBS_STATE: {"mean": np.array([0.1, 0.2, 0.3, 0.5]), "std": np.array([0.5, 0.5, 0.5, 0.5])},
        ACTION: {"mean": np.array([0.0, 0.0, 0.0, 0.0]), "std": np.array([2.0, 2.0, 2.0, 1.0])},
    }
    demos = [SimpleNamespace(action=np.array([[9.0, 9.0, 9.0, gripper]])) for gripper in (-1.0, 0.0)]
    hand = torch.tensor([[0.3, -0.2, 0.7]])
    state = torch.cat([hand, torch.tensor([[0.9]])], dim=1)
    normalized_state = (state - torch.tensor([[0.1, 0.2, 0.3, 0.5]])) / 0.5
    action = hold_action(stats, demos)({OBS_STATE: normalized_state, OBS_ENV_STATE: torch.zeros(1, 39)})
    torch.testing.assert_close(action, torch.tensor([[0.15, -0.1, 0.35, -0.5]]))


def test_the_study_refuses_act_smooth_without_the_peers_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(act_smooth.importlib.util, "find_spec", lambda name: None)
    settings = replace(quick_settings(tmp_path), variants=("act", "act_smooth", "default"))
    install = r"pip install 'lerobot_policy_act_rtc_alldelays\[peers\]'"
    with pytest.raises(ValueError, match=r"not installed.*" + install):
        settings.check()


def test_the_study_runs_act_smooth_under_position_targets_only(tmp_path):
    pytest.importorskip(act_smooth.ACT_SMOOTH_MODULE)
    settings = replace(quick_settings(tmp_path), variants=("act", "act_smooth", "default"), actions="delta")
    with pytest.raises(ValueError, match="position targets only"):
        settings.check()


def test_the_quick_study_trains_act_smooth_and_reports_it_beside_act(tmp_path):
    pytest.importorskip(act_smooth.ACT_SMOOTH_MODULE)
    settings = replace(
        quick_settings(tmp_path), variants=("act", "act_smooth", "default"), steps=(4,), equal_time=False
    )
    rows = run_study(settings, log=lambda message: None)
    peer_rows = [r for r in rows if r["variant"] == "act_smooth"]
    assert {(r["mode"], r["delay"]) for r in peer_rows} == {("prefix", 0), ("prefix", 2)}
    assert all(r["relative"] == "committed action" and r["episodes"] == 2 for r in peer_rows)
    assert "| act_smooth | committed action | prefix | 0 |" in (tmp_path / "summary.md").read_text()
    # The prefix-reliance diagnostic reads this policy's prefix inputs: none for the peer.
    reliance = json.loads((tmp_path / "prefix_reliance.json").read_text())
    assert reliance and not any(r["variant"] == "act_smooth" for r in reliance)


def test_act_smooth_tuned_trains_at_its_own_learning_rate_and_act_smooth_at_the_studys(tmp_path):
    pytest.importorskip(act_smooth.ACT_SMOOTH_MODULE)
    settings = quick_settings(tmp_path)
    study_recipe = policy_config(ACT_SMOOTH, settings)
    tuned = policy_config(ACT_SMOOTH_TUNED, settings)
    assert (study_recipe.optimizer_lr, study_recipe.optimizer_lr_backbone) == (settings.lr, settings.lr)
    assert (tuned.optimizer_lr, tuned.optimizer_lr_backbone) == (ACT_SMOOTH_TUNED_LR, ACT_SMOOTH_TUNED_LR)
    assert ACT_SMOOTH_TUNED_LR != settings.lr
    assert eval_settings(ACT_SMOOTH_TUNED, [0, 4]) == eval_settings(ACT_SMOOTH, [0, 4])
