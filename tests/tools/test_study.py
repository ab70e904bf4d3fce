"""The MetaWorld state harness and the evidence study: statistics, demonstrations, the rollout contract and
the `--quick` study."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig  # noqa: E402
from lerobot.envs.factory import make_env_pre_post_processors  # noqa: E402
from lerobot.envs.metaworld import MetaworldEnv  # noqa: E402
from lerobot.scripts.lerobot_eval import rollout  # noqa: E402
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE  # noqa: E402

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld_demos import (  # noqa: E402
    lerobot_mujoco_env,
    set_max_episode_steps,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld_state import (  # noqa: E402
    ENV_STATE_DIM,
    NOISY_EXECUTION_STD,
    MetaworldStateEnv,
    lateral_deviation,
    record_demos,
    run_demo,
)
from lerobot_policy_act_rtc_alldelays.tools.study.cli import parse_args  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.data import (  # noqa: E402
    TrainingData,
    demo_stats,
    training_windows,
)
from lerobot_policy_act_rtc_alldelays.tools.study.evaluation import (  # noqa: E402
    DelayedChunking,
    evaluated_policy,
    make_vector_env,
    run_episodes,
)
from lerobot_policy_act_rtc_alldelays.tools.study.report import rewrite_report  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.runner import run_study  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.settings import quick_settings  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.statistics import (  # noqa: E402
    CELL_KEYS,
    DIAGNOSTIC_KEYS,
    wilson_interval,
)
from lerobot_policy_act_rtc_alldelays.tools.study.training import (  # noqa: E402
    Trainer,
    policy_config,
    training_runs,
)
from lerobot_policy_act_rtc_alldelays.tools.study.variants import VARIANTS, variant_overrides  # noqa: E402

TASK = "pick-out-of-hole-v3"  # its expert goes straight to the object: detours are easy to tell apart


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962)],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be in 0..n=3"):
        wilson_interval(4, 3)


def test_study_settings_reject_delays_the_modes_cannot_run(tmp_path):
    settings = quick_settings(tmp_path)  # chunk_size 8, n_action_steps 4, rtc_max_delay 2
    with pytest.raises(ValueError, match="exceed rtc_max_delay=2"):
        replace(settings, delays=(0, 3)).check()
    with pytest.raises(ValueError, match="delay < n_action_steps"):
        replace(settings, delays=(0, 2), n_action_steps=2).check()
    with pytest.raises(ValueError, match="include it in --variants"):
        replace(settings, variants=("act", "on")).check()
    with pytest.raises(ValueError, match="include it in --variants"):
        replace(settings, variants=("act", "on", "off"), time_reference="state").check()


NEW_FIELDS = ("use_state_token", "rtc_prefix_dropout", "rtc_prefix_noise_std", "rtc_delays_per_sample")


def test_old_variants_pin_the_policy_as_it_was_before_the_remedies(tmp_path):
    settings = quick_settings(tmp_path)
    before = (False, 0.0, 0.0, None)
    for old in ("off", "on", "shared"):
        config = policy_config(old, settings)
        assert tuple(getattr(config, name) for name in NEW_FIELDS) == before
    remedies = {"state": (True, 0.0, 0.0, None), "dropout": (True, 0.5, 0.0, None),
                "noise": (True, 0.0, 0.3, None), "k2": (True, 0.0, 0.0, 2), "k3": (True, 0.0, 0.0, 3)}
    for variant, fields in remedies.items():
        assert tuple(getattr(policy_config(variant, settings), name) for name in NEW_FIELDS) == fields
        assert policy_config(variant, settings).rtc_train_all_delays


def test_default_variant_runs_the_shipped_defaults(tmp_path):
    assert variant_overrides("default") == {}
    default, shipped = policy_config("default", quick_settings(tmp_path)), ACTRelativeRTCAllDelaysConfig()
    for name in (*NEW_FIELDS, "rtc_train_all_delays", "rtc_prefix_attention", "rtc_delay_loss_weights"):
        assert getattr(default, name) == getattr(shipped, name)
    assert VARIANTS[-1] == "default"


def test_command_line_takes_a_budget_scan_and_a_time_reference():
    settings = parse_args(
        ["--steps", "600", "2000", "--variants", "act", "on", "k2", "--time-reference", "on"]
    )
    assert list(settings.steps) == [600, 2000]
    assert settings.reference == "on" and settings.reference_steps == 600
    assert list(settings.variants) == ["act", "on", "k2"]
    defaults = parse_args([])
    assert list(defaults.variants) == ["act", "on", "state", "dropout", "noise", "k2", "default"]
    assert list(defaults.demos) == ["unimodal", "noisy"] and defaults.reference == "default"


def test_every_step_count_is_a_run_and_equal_time_reuses_the_run_of_its_steps(tmp_path):
    settings = replace(quick_settings(tmp_path), steps=(4, 8))
    assert training_runs(settings, 8) == [
        (4, [("equal_steps", 4)]), (8, [("equal_steps", 8), ("equal_time", 4)])
    ]
    assert training_runs(settings, 5)[-1] == (5, [("equal_time", 4)])
    assert training_runs(replace(settings, equal_time=False), 8) == [
        (4, [("equal_steps", 4)]), (8, [("equal_steps", 8)])
    ]


def test_lerobot_metaworld_internals_still_hold_the_mujoco_env():
    """The fenced private accesses: LeRobot's MetaworldEnv keeps MetaWorld's env (39-dim observations) in
    `_env` and its step limit in `_max_episode_steps`, where `rollout` reads it."""
    env = MetaworldEnv(task=TASK, **MetaworldEnvConfig(task=TASK).gym_kwargs)
    try:
        raw, _ = lerobot_mujoco_env(env).reset()
        assert raw.shape == (ENV_STATE_DIM,)
        assert set_max_episode_steps(env, 1000) == 500  # capped at MetaWorld's own limit
        assert set_max_episode_steps(env, 7) == 7
    finally:
        env.close()
    with pytest.raises(ValueError, match="positive"):
        set_max_episode_steps(env, 0)

    class Zero(torch.nn.Module):
        def reset(self):
            pass

        def select_action(self, batch):
            return torch.zeros(batch[OBS_STATE].shape[0], 4)

    vector_env = make_vector_env(TASK, n_envs=2, max_steps=3)  # through set_max_episode_steps
    try:
        identity = [lambda data: data] * 4  # env and policy processors: nothing to transform here
        result = rollout(vector_env, Zero(), *identity, seeds=[0, 1])
    finally:
        vector_env.close()
    assert result[ACTION].shape == (2, 3, 4)


def test_state_env_observes_lerobots_agent_pos_and_metaworlds_full_state_without_pixels():
    env = MetaworldStateEnv(TASK, max_steps=50)
    try:
        first, info = env.reset(seed=3)
        again, _ = env.reset(seed=3)
        other, _ = env.reset(seed=4)
        assert set(first) == {"agent_pos", "environment_state"} and info == {"is_success": False}
        assert first["environment_state"].shape == (ENV_STATE_DIM,)
        np.testing.assert_array_equal(first["agent_pos"], first["environment_state"][:4])
        np.testing.assert_array_equal(first["environment_state"], again["environment_state"])  # seeded scene
        assert not np.array_equal(first["environment_state"], other["environment_state"])
        env.reset(seed=3)
        for _ in range(200):  # the expert succeeds: the episode terminates with LeRobot's final_info
            _, _, terminated, _, info = env.step(env.expert_action())
            if terminated:
                break
        assert terminated and info["final_info"]["is_success"]
    finally:
        env.close()


def test_multimodal_demos_split_into_two_modes_and_unimodal_demos_do_not():
    multimodal = record_demos(TASK, 6, "multimodal", first_seed=0)
    unimodal = record_demos(TASK, 3, "unimodal", first_seed=0)
    modes = np.array([d.mode for d in multimodal])
    deviations = np.array([lateral_deviation(d) for d in multimodal])
    assert set(modes) == {-1, 1}, "6 seeds should draw both sides"
    # Every detour deviates to its own side, far more than the demos of a side differ among themselves.
    np.testing.assert_array_equal(np.sign(deviations), modes)
    left, right = deviations[modes == 1], deviations[modes == -1]
    gap = left.min() - right.max()
    assert gap > 0.15 and gap > 10 * max(left.std(), right.std(), 1e-3)
    assert all(abs(lateral_deviation(d)) < 0.03 for d in unimodal)
    assert all(d.success for d in multimodal + unimodal)


@pytest.mark.filterwarnings("ignore:Constant")
def test_noisy_demos_record_the_experts_clean_action_but_execute_another():
    env = MetaworldStateEnv(TASK, max_steps=8)
    try:
        clean = run_demo(env, seed=0, mode=0, max_steps=8)
        noisy = run_demo(env, seed=0, mode=0, max_steps=8, execution_noise=NOISY_EXECUTION_STD)
        # The recorded action is the expert's at the recorded state: the same as without noise at the same
        # reset, then the expert's reaction to where the noisy execution led.
        np.testing.assert_array_equal(noisy.action[0], clean.action[0])
        np.testing.assert_array_equal(noisy.env_state[0], clean.env_state[0])
        for raw, action in zip(noisy.env_state, noisy.action, strict=True):
            expert = np.clip(env.expert_policy.get_action(raw.astype(np.float64)), -1, 1)
            np.testing.assert_allclose(action, expert, atol=1e-3)
        assert not np.allclose(noisy.state[1:], clean.state[1:])  # executed: the action plus noise
    finally:
        env.close()


def test_training_windows_pad_past_the_episode_end_like_lerobot_datasets():
    demos = record_demos(TASK, 1, "unimodal", first_seed=0)
    demo = demos[0]
    windows = training_windows(demos, [0, 1, 2])
    assert windows[ACTION].shape == (demo.length, 3, 4) and windows[OBS_ENV_STATE].shape == (demo.length, 39)
    np.testing.assert_array_equal(windows[ACTION][0].numpy(), demo.action[:3])
    last = windows[ACTION][-1].numpy()
    np.testing.assert_array_equal(last, np.repeat(demo.action[-1:], 3, axis=0))
    assert windows["action_is_pad"][-1].tolist() == [False, True, True]
    assert windows["action_is_pad"][:-2].sum() == 0


@pytest.fixture(scope="module")
def quick_data():
    return TrainingData(*(lambda demos: (demo_stats(demos), demos))(record_demos(TASK, 1, "unimodal")))


@pytest.mark.parametrize("mode", ["prefix", "discard"])
def test_chunks_start_every_n_action_steps_in_every_env_of_a_batched_rollout(quick_data, mode, tmp_path):
    """run_episodes measures joins at multiples of n_action_steps: the policy's own chunk-start hook
    agrees, in a vector env through LeRobot's rollout, under a delay."""
    settings = quick_settings(tmp_path)
    trainer = Trainer("off", 0, settings, quick_data)
    starts: list[int] = []
    policy = evaluated_policy(trainer.policy, mode, 2)
    policy.on_chunk_start = starts.append
    vector_env = make_vector_env(TASK, n_envs=2, max_steps=11)
    try:
        episodes = run_episodes(
            vector_env,
            policy,
            trainer.preprocessor,
            trainer.postprocessor,
            make_env_pre_post_processors(MetaworldEnvConfig(task=TASK), None),
            [100_000, 100_001],
            settings.n_action_steps,
        )
    finally:
        vector_env.close()
    # n_action_steps=4 in the quick settings; the chunk requested at step 10 would start after the episode.
    assert starts == [0, 4, 8, 12]
    assert [e["n_switches"] for e in episodes] == [2, 2]
    assert [e["episode_steps"] for e in episodes] == [11, 11]


def test_delayed_chunking_reproduces_the_plugins_discard_mode(quick_data, tmp_path):
    """The wrapper that gives LeRobot's ACT a delay follows the same schedule as the plugin's own discard."""
    trainer = Trainer("off", 0, quick_settings(tmp_path), quick_data)
    policy = trainer.policy
    observations = [
        {OBS_STATE: torch.randn(2, 4), OBS_ENV_STATE: torch.randn(2, ENV_STATE_DIM)} for _ in range(11)
    ]
    evaluated_policy(policy, "discard", 2)
    policy.reset()
    expected = [policy.select_action(o) for o in observations]
    evaluated_policy(policy, "prefix", 0)
    wrapper = DelayedChunking(policy, delay=2, n_action_steps=4)
    wrapper.reset()
    for observation, action in zip(observations, expected, strict=True):
        torch.testing.assert_close(wrapper.select_action(observation), action)
    with pytest.raises(ValueError, match="delay < n_action_steps"):
        DelayedChunking(policy, delay=4, n_action_steps=4)


def test_quick_study_writes_every_cell_with_wilson_intervals_of_its_counts(tmp_path):
    rows = run_study(quick_settings(tmp_path / "quick"), log=lambda message: None)
    saved = json.loads((tmp_path / "quick" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert rewrite_report(tmp_path / "quick") == saved  # the report is a function of the episodes files
    cells = {tuple(r[k] for k in CELL_KEYS) for r in rows}
    assert len(cells) == len(rows)
    # (equal steps at 4 and 8 steps, equal time at the time of 4) x noisy demos x (ACT: discard at 2 delays +
    # ensembling; 2 RTC variants x 2 modes x 2 delays).
    budgets = {("equal_steps", 4), ("equal_steps", 8), ("equal_time", 4)}
    assert {(r["budget"], r["steps"]) for r in rows} == budgets
    assert len(rows) == 3 * 1 * (3 + 2 * 2 * 2)
    for row in rows:
        assert row["episodes"] == 2 and row["train_seeds"] == [0] and row["demos"] == "noisy"
        assert (row["ci95_low"], row["ci95_high"]) == wilson_interval(row["successes"], row["episodes"])
        assert row["success_rate"] == row["successes"] / row["episodes"]
        if row["mode"] != "temporal_ensemble":
            assert row["discontinuity_mean"] is not None
        if row["budget"] == "equal_steps":
            assert row["train_steps"] == [row["steps"]]
    assert {(r["variant"], r["mode"]) for r in rows} == {
        ("act", "discard"), ("act", "temporal_ensemble"),
        *((v, m) for v in ("dropout", "default") for m in ("prefix", "discard")),
    }
    # The diagnostic: every trained RTC model at the delay > 0, one row per cell.
    reliance = json.loads((tmp_path / "quick" / "prefix_reliance.json").read_text())
    assert {tuple(r[k] for k in DIAGNOSTIC_KEYS) for r in reliance} == {
        (budget, steps, "hammer-v3", "noisy", variant, 2)
        for budget, steps in budgets
        for variant in ("dropout", "default")
    }
    assert all(r["prefix_reliance_mean"] >= 0 and len(r["per_seed"]) == 1 for r in reliance)
    markdown = (tmp_path / "quick" / "summary.md").read_text()
    assert "| equal_steps | 4 |" in markdown and "| equal_time | 4 |" in markdown
    assert "## Prefix reliance" in markdown
    pytest.importorskip("matplotlib")
    assert (tmp_path / "quick" / "equal_steps_8_steps_success_discontinuity.png").stat().st_size > 0
