"""The prefix-collapse diagnostic: the pull of the prefix on each chunk in closed loop, counted per episode
while it runs, without changing the rollout."""

import pytest
import torch
from conftest import make_batch, make_policy

pytest.importorskip("metaworld")  # the `metaworld` extra; the study's modules import it

from lerobot_policy_act_rtc_alldelays.tools.study.prefix_collapse import (  # noqa: E402
    PrefixPullProbe,
    collapse_settings,
    pull_summary,
)
from lerobot_policy_act_rtc_alldelays.tools.study.variants import PEERS, VARIANTS  # noqa: E402

DELAY, N_ACTION_STEPS = 2, 4


def test_pulls_count_each_episode_until_it_ends_and_split_by_outcome():
    # Requests with a prefix are made at steps 2, 6, 10 (every n_action_steps, delay steps early).
    # [B=2 episodes, A=2 coordinates] per request: the first coordinate pulled, the second not.
    pulls = [torch.tensor([[2.0, 0.0], [-4.0, 0.0]]), torch.tensor([[6.0, 0.0], [8.0, 0.0]]),
             torch.tensor([[10.0, 0.0], [200.0, 0.0]])]
    episodes = [{"episode_steps": 11, "success": True}, {"episode_steps": 7, "success": False}]
    summary = pull_summary(pulls, episodes, DELAY, N_ACTION_STEPS)
    # The second episode ended at step 7: its pull at step 10 (100) is no episode's.
    assert summary["per_request"] == [1.5, 3.5, 5.0]
    assert summary["succeeded"] == pytest.approx(3.0) and summary["failed"] == pytest.approx(3.0)
    assert summary["per_coordinate"] == pytest.approx([6.0, 0.0])
    assert summary["bias"] == pytest.approx([4.4, 0.0])  # (2 - 4 + 6 + 8 + 10) / 5


@pytest.mark.parametrize("anchor", ["state", "last_action"])
def test_the_probe_records_one_pull_per_prefix_request_and_leaves_the_actions_unchanged(anchor):
    def rollout(probed: bool) -> tuple[list[torch.Tensor], PrefixPullProbe | None]:
        policy = make_policy(
            chunk_size=8, n_action_steps=N_ACTION_STEPS, rtc_max_delay=3, relative_anchor=anchor
        )
        policy.config.set_inference_setting("prefix", DELAY)
        probe = PrefixPullProbe(policy) if probed else None
        batch = make_batch(policy.config, batch_size=2)
        policy.reset()
        actions = [policy.select_action(batch) for _ in range(3 * N_ACTION_STEPS)]
        if probe is not None:
            probe.remove()
            assert "predict_action_chunk" not in vars(policy)  # the class's method again
        return actions, probe

    plain, _ = rollout(probed=False)
    probed, probe = rollout(probed=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, probed, strict=True))
    # 12 steps: the first chunk without a prefix, then requests at steps 2, 6 and 10.
    assert len(probe.pulls) == 3 and all(pull.shape == (2, 4) for pull in probe.pulls)
    assert all(bool((pull != 0).all()) for pull in probe.pulls)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in PEERS])
def test_every_variant_of_this_policy_runs_in_one_cell_with_the_studys_settings(variant):
    settings = collapse_settings("assembly-v3", "noisy", variant)
    assert (settings.tasks, settings.demos, settings.variants) == (("assembly-v3",), ("noisy",), (variant,))
    assert not settings.equal_time  # one model per seed: no budget shared with a reference variant
