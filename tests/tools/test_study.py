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
from lerobot_policy_act_rtc_alldelays.losses import delay_loss_weights  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld.demos import (  # noqa: E402
    lerobot_mujoco_env,
    set_max_episode_steps,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld.position import (  # noqa: E402
    delta_toward,
    position_target,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld.state import (  # noqa: E402
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
    act_blend_steps,
    eval_settings,
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
    not_worse,
    seed_bootstrap_interval,
    summarize,
    wilson_interval,
)
from lerobot_policy_act_rtc_alldelays.tools.study.task_scan import qualifying_budgets, study_tasks  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.training import (  # noqa: E402
    Trainer,
    config_record,
    policy_config,
    training_runs,
)
from lerobot_policy_act_rtc_alldelays.tools.study.units import ADDED_FIELDS, Unit, stale_reason  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.variants import VARIANTS, variant_overrides  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.verdicts import (  # noqa: E402
    judged_budgets,
    verdict_rows,
    verdicts_markdown,
)

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


def test_the_probes_of_the_joins_change_only_their_fields_of_the_defaults_before_smooth_joins(tmp_path):
    settings = replace(quick_settings(tmp_path), rtc_max_delay=8, chunk_size=18, n_action_steps=9)
    before = {"rtc_blend_steps": 0, "rtc_delay0_loss_share": None, "rtc_delay_loss_weights": None,
              "predict_relative_actions": True}
    changed = {
        "absolute": {"predict_relative_actions": False},
        "blend": {"rtc_blend_steps": 4},
        "absolute_blend": {"rtc_blend_steps": 4, "predict_relative_actions": False},
        "delay0_weight": {"rtc_delay_loss_weights": [8.0] + [1.0] * 8},
        "blend_delay0_weight": {"rtc_blend_steps": 4, "rtc_delay_loss_weights": [8.0] + [1.0] * 8},
    }
    default = policy_config("default", settings)
    for variant, fields in changed.items():
        config = policy_config(variant, settings)
        assert {name: getattr(config, name) for name in before} == {**before, **fields}, variant
        for name in NEW_FIELDS:
            assert getattr(config, name) == getattr(default, name), (variant, name)


def test_the_default_variant_blends_and_weights_delay_zero_as_blend_delay0_weight_did(tmp_path):
    settings = replace(quick_settings(tmp_path), rtc_max_delay=8, chunk_size=18, n_action_steps=9)
    default, probe = policy_config("default", settings), policy_config("blend_delay0_weight", settings)
    assert default.blend_steps == probe.blend_steps == 4
    weights = [delay_loss_weights(c.n_delays, c.rtc_delay0_loss_share, c.rtc_delay_loss_weights).tolist()
               for c in (default, probe)]
    assert weights[0] == pytest.approx(weights[1])


def test_command_line_takes_a_budget_scan_and_a_time_reference():
    settings = parse_args(
        ["--steps", "600", "2000", "--variants", "act", "on", "k2", "--time-reference", "on"]
    )
    assert list(settings.steps) == [600, 2000]
    assert settings.reference == "on" and settings.reference_steps == 600
    assert list(settings.variants) == ["act", "on", "k2"]
    defaults = parse_args([])
    assert list(defaults.variants) == ["act", "absolute", "default"] and defaults.actions == "position"
    assert list(defaults.demos) == ["unimodal", "noisy"] and defaults.reference == "default"
    assert list(defaults.tasks) == ["sweep-v3", "handle-pull-v3"]  # the task scan's picks


def test_every_step_count_is_a_run_and_equal_time_reuses_the_run_of_its_steps(tmp_path):
    settings = replace(quick_settings(tmp_path), steps=(4, 8))
    assert training_runs(settings, 8) == [
        (4, [("equal_steps", 4)]), (8, [("equal_steps", 8), ("equal_time", 4)])
    ]
    # Ascending, so that a longer run continues the shorter one's training.
    assert training_runs(settings, 5) == [
        (4, [("equal_steps", 4)]), (5, [("equal_time", 4)]), (8, [("equal_steps", 8)])
    ]
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

    # Through set_max_episode_steps; zero deltas: the hand stays.
    vector_env = make_vector_env(TASK, n_envs=2, max_steps=3, actions="delta")
    try:
        identity = [lambda data: data] * 4  # env and policy processors: nothing to transform here
        result = rollout(vector_env, Zero(), *identity, seeds=[0, 1])
    finally:
        vector_env.close()
    assert result[ACTION].shape == (2, 3, 4)


def test_state_env_observes_lerobots_agent_pos_and_metaworlds_full_state_without_pixels():
    env = MetaworldStateEnv(TASK, max_steps=50, actions="delta")
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
    env = MetaworldStateEnv(TASK, max_steps=8, actions="delta")
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


def test_position_env_commands_the_target_at_most_one_action_scale_a_step_and_holds_it():
    env = MetaworldStateEnv(TASK, max_steps=50)  # position targets: the default
    try:
        env.reset(seed=0)
        commanded, hand = env.commanded, env.raw_observation[:3].copy()
        target = np.append(commanded + [0.0, 0.0, 0.05], -1.0)  # 5 cm up: 5 saturated steps of 1 cm
        path = []
        for _ in range(30):
            env.step(target)
            path.append(env.commanded)
        np.testing.assert_allclose(np.diff(np.asarray(path), axis=0, prepend=[commanded])[:5, 2], 0.01)
        np.testing.assert_allclose(path[5:], np.repeat(target[None, :3], 25, axis=0), atol=1e-9)  # held
        # The hand follows the command: it has risen by the 5 cm, within the weld's few millimetres.
        np.testing.assert_allclose(env.raw_observation[:3] - hand, [0.0, 0.0, 0.05], atol=0.01)
    finally:
        env.close()
    hand = np.array([0.0, 0.6, 0.2])
    np.testing.assert_allclose(delta_toward(hand, np.array([0.0, 0.6, 0.5, 0.3]), 0.01), [0, 0, 1, 0.3])
    target = position_target(hand, np.array([0.5, -1.0, 0.25, -1.0]), 0.01)
    np.testing.assert_allclose(target, [0.005, 0.59, 0.2025, -1.0], atol=1e-6)
    np.testing.assert_allclose(delta_toward(hand, target, 0.01), [0.5, -1.0, 0.25, -1.0], atol=1e-4)


# The recorded targets are float32, as a LeRobot dataset stores actions: a coordinate of ~0.7 m is rounded
# by up to 3e-8 m, 3e-6 of MetaWorld's delta unit, and the states are stored as float32 too. Over a whole
# hammer-v3 episode, contacts included, the replayed states stayed within 3e-8 of the recorded ones; 1e-6 m
# leaves room for other platforms' rounding and is 10,000 times below the 1 cm a step moves.
REPLAY_TOLERANCE = 1e-6


@pytest.mark.filterwarnings("ignore:Constant")
def test_replaying_a_demos_position_targets_reproduces_its_states():
    demo = record_demos("hammer-v3", 1, "unimodal", first_seed=0, max_steps=300)[0]
    env = MetaworldStateEnv("hammer-v3", max_steps=300)
    try:
        observation, _ = env.reset(seed=demo.seed)
        replayed, success = [], False
        for target in demo.action:
            replayed.append(observation["environment_state"])
            observation, _, _, _, info = env.step(target)
            success = success or info["is_success"]
    finally:
        env.close()
    assert success and demo.success
    np.testing.assert_allclose(np.asarray(replayed), demo.env_state, rtol=0, atol=REPLAY_TOLERANCE)


@pytest.mark.filterwarnings("ignore:Constant")
def test_noisy_position_demos_record_the_clean_target_but_execute_the_noisy_one():
    env = MetaworldStateEnv(TASK, max_steps=8)
    try:
        clean = run_demo(env, seed=0, mode=0, max_steps=8)
        noisy = run_demo(env, seed=0, mode=0, max_steps=8, execution_noise=NOISY_EXECUTION_STD)
    finally:
        env.close()
    expert = np.clip([env.expert_policy.get_action(raw.astype(np.float64)) for raw in noisy.env_state], -1, 1)
    # Recorded: the command before each step plus the expert's clean delta, so the commands follow from the
    # targets; executed: the noisy delta, so the command moved otherwise than the clean delta says.
    commands = noisy.action[:, :3] - expert[:, :3] * env.action_scale
    moves = np.diff(commands, axis=0)
    np.testing.assert_allclose(noisy.action[0], clean.action[0])  # same reset, same first command
    assert np.abs(moves - expert[:-1, :3] * env.action_scale).max() > 1e-3
    assert np.abs(moves).max() <= env.action_scale + 1e-6  # yet at most one saturated step


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
    vector_env = make_vector_env(TASK, n_envs=2, max_steps=11, actions="position")
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


def test_act_with_blending_blends_its_joins_as_the_plugins_own_select_action(quick_data, tmp_path):
    """The `blend` rows of LeRobot's ACT: the wrapper blends each join as this policy does in discard mode,
    with the steps this policy's default resolves to for the same chunking."""
    trainer = Trainer("default", 0, quick_settings(tmp_path), quick_data)
    policy = trainer.policy
    observations = [
        {OBS_STATE: torch.randn(2, 4), OBS_ENV_STATE: torch.randn(2, ENV_STATE_DIM)} for _ in range(11)
    ]
    evaluated_policy(policy, "discard", 1)
    policy.reset()
    expected = [policy.select_action(o) for o in observations]
    blend_steps = policy.config.blend_steps
    assert blend_steps == act_blend_steps(policy.config) == 2  # chunk 8 executing 4
    wrapper = DelayedChunking(policy, delay=1, n_action_steps=4, blend_steps=blend_steps)
    evaluated_policy(policy, "prefix", 0)
    wrapper.reset()
    for observation, action in zip(observations, expected, strict=True):
        torch.testing.assert_close(wrapper.select_action(observation), action)


def test_a_saved_unit_whose_policy_config_is_not_the_variants_today_is_trained_again(tmp_path):
    settings = replace(quick_settings(tmp_path), variants=("default",), steps=(4,), equal_time=False)
    run_study(settings, log=lambda message: None)
    (path,) = (tmp_path / "units").glob("**/*.json")
    unit = json.loads(path.read_text())
    assert unit["policy_config"]["rtc_blend_steps"] == 2  # the default resolved to a number
    # As if trained under the defaults before smooth joins: the rerun must not reuse it.
    unit["policy_config"].update(rtc_blend_steps=0, rtc_delay0_loss_share=None)
    path.write_text(json.dumps(unit))
    messages = []
    run_study(settings, log=messages.append)
    assert json.loads(path.read_text())["policy_config"]["rtc_blend_steps"] == 2
    assert any("trained again, its policy config differs" in m and "rtc_blend_steps (0 there, 2 now)" in m
               for m in messages)


def test_a_unit_saved_before_a_field_existed_is_current_at_the_value_that_did_what_it_ran(tmp_path):
    settings = replace(quick_settings(tmp_path), variants=("default",))
    unit = Unit("sweep-v3", "unimodal", "default", 0, 4)
    episodes = [{"mode": mode, "delay": delay} for mode, delay in eval_settings("default", settings.delays)]
    record = config_record(policy_config("default", settings))
    for name, earlier_value in ADDED_FIELDS.items():
        saved = {"policy_config": {k: v for k, v in record.items() if k != name}, "episodes": episodes}
        assert record[name] == earlier_value and stale_reason(saved, unit, settings) is None
    saved = {"policy_config": {**record, "relative_anchor": "last_action"}, "episodes": episodes}
    assert "relative_anchor ('last_action' there, 'state' now)" in stale_reason(saved, unit, settings)


def test_a_saved_unit_without_a_policy_config_is_trained_again(tmp_path):
    settings = replace(quick_settings(tmp_path), variants=("act",), steps=(4,), equal_time=False)
    run_study(settings, log=lambda message: None)
    (path,) = (tmp_path / "units").glob("**/*.json")
    unit = json.loads(path.read_text())
    del unit["policy_config"]
    path.write_text(json.dumps(unit))
    messages = []
    run_study(settings, log=messages.append)
    assert "policy_config" in json.loads(path.read_text())
    assert any("records no policy config" in m for m in messages)


def test_quick_study_writes_every_cell_with_wilson_intervals_of_its_counts(tmp_path):
    rows = run_study(quick_settings(tmp_path / "quick"), log=lambda message: None)
    saved = json.loads((tmp_path / "quick" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert rewrite_report(tmp_path / "quick") == saved  # the report is a function of the episodes files
    cells = {tuple(r[k] for k in CELL_KEYS) for r in rows}
    assert len(cells) == len(rows)
    # (equal steps at 4 and 8 steps, equal time at the time of 4) x noisy demos x (ACT: discard and blend at
    # 2 delays + ensembling; 2 RTC variants x 2 modes x 2 delays).
    budgets = {("equal_steps", 4), ("equal_steps", 8), ("equal_time", 4)}
    assert {(r["budget"], r["steps"]) for r in rows} == budgets
    assert len(rows) == 3 * 1 * (5 + 2 * 2 * 2)
    for row in rows:
        assert row["episodes"] == 2 and row["train_seeds"] == [0] and row["demos"] == "noisy"
        assert (row["ci95_low"], row["ci95_high"]) == wilson_interval(row["successes"], row["episodes"])
        assert row["seed_ci95_low"] <= row["success_rate"] <= row["seed_ci95_high"]
        assert row["success_rate"] == row["successes"] / row["episodes"]
        if row["mode"] != "temporal_ensemble":
            assert row["discontinuity_mean"] is not None
        if row["budget"] == "equal_steps":
            assert row["train_steps"] == [row["steps"]]
    assert all(row["actions"] == "position" for row in rows)
    relative = {(r["variant"], r["relative"]) for r in rows}
    assert relative == {("act", False), ("dropout", True), ("default", True)}
    assert {(r["variant"], r["mode"]) for r in rows} == {
        ("act", "discard"), ("act", "blend"), ("act", "temporal_ensemble"),
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
    assert "## Prefix reliance" in markdown and "| seed-bootstrap 95% |" in markdown
    pytest.importorskip("matplotlib")
    assert (tmp_path / "quick" / "equal_steps_8_steps_success_discontinuity.png").stat().st_size > 0


def without_timings(rows: list[dict]) -> list[dict]:
    """Rows less what measures the machine rather than the policy (training seconds)."""
    return [
        {**row, "per_seed": [{k: v for k, v in s.items() if k != "train_seconds"} for s in row["per_seed"]]}
        for row in rows
    ]


def test_an_interrupted_study_resumed_gives_the_rows_of_an_uninterrupted_one(tmp_path, monkeypatch):
    # No equal wall-clock budget: its steps come from a timing, which differs between two runs.
    settings = replace(quick_settings(tmp_path / "whole"), equal_time=False)
    whole = run_study(settings, log=lambda message: None)
    interrupted = replace(settings, output_dir=tmp_path / "interrupted")
    train, calls = Trainer.train, []

    def killed_on_the_fourth_training(self, steps):
        calls.append(steps)
        if len(calls) == 4:  # inside the 4th unit (dropout at 8 steps, trained on from its 4-step unit)
            raise KeyboardInterrupt
        train(self, steps)

    monkeypatch.setattr(Trainer, "train", killed_on_the_fourth_training)
    with pytest.raises(KeyboardInterrupt):
        run_study(interrupted, log=lambda message: None)
    monkeypatch.setattr(Trainer, "train", train)
    saved = {p: p.read_text() for p in (tmp_path / "interrupted" / "units").glob("**/*.json")}
    assert len(saved) == 3  # act at 4 and 8 steps, dropout at 4: the unit in progress is lost, no more
    resumed = run_study(interrupted, log=lambda message: None)
    assert without_timings(resumed) == without_timings(whole)
    assert all(path.read_text() == text for path, text in saved.items())  # reused, not trained again


def test_a_study_refuses_to_resume_under_other_settings(tmp_path):
    settings = replace(quick_settings(tmp_path), variants=("act",), steps=(4,), equal_time=False)
    run_study(settings, log=lambda message: None)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.002 there, 0.001 now\)"):
        run_study(replace(settings, lr=1e-3), log=lambda message: None)
    extended = run_study(replace(settings, steps=(4, 8)), log=lambda message: None)  # more units: resumes
    assert {row["steps"] for row in extended} == {4, 8}
    older = tmp_path / "older"  # a study saved as episodes files, before units
    older.mkdir()
    (older / "episodes_hammer-v3.jsonl").write_text("")
    with pytest.raises(ValueError, match="without units"):
        run_study(replace(settings, output_dir=older), log=lambda message: None)


def cell_episodes(successes: list[int], episodes: list[int], **labels: object) -> list[dict]:
    """Hand-made episode records of one cell, whose training seed i succeeds in `successes[i]` of its
    `episodes[i]` episodes."""
    cell = {"budget": "equal_steps", "steps": 100, "task": TASK, "demos": "noisy", "variant": "default",
            "mode": "prefix", "delay": 2, "actions": "position", "relative": True, **labels}
    return [
        {**cell, "train_seed": seed, "train_steps": 100, "train_seconds": 1.0,
         "success": episode < seed_successes, "discontinuity": None, "episode_steps": 50}
        for seed, (seed_successes, seed_episodes) in enumerate(zip(successes, episodes, strict=True))
        for episode in range(seed_episodes)
    ]


def test_seed_bootstrap_interval_holds_the_spread_between_seeds_that_wilsons_leaves_out():
    (row,) = summarize(cell_episodes([16, 22, 28], [34, 34, 34]))  # seeds as different as the issue's
    assert row["seed_ci95_low"] <= row["success_rate"] <= row["seed_ci95_high"]
    # Resampling the episodes alone would give about Wilson's width; the seeds' spread about doubles it.
    assert row["seed_ci95_high"] - row["seed_ci95_low"] > 1.5 * (row["ci95_high"] - row["ci95_low"])


@pytest.mark.parametrize(("successes", "episodes"), [([5], [9]), ([20, 20, 20], [22, 22, 22])])
def test_seed_bootstrap_of_seeds_alike_is_the_episode_bootstraps_binomial(successes, episodes):
    from scipy.stats import binom

    # Seeds of one rate resample as one pool of episodes, whose bootstrap draws its successes from
    # Binomial(episodes, rate): the interval is that binomial's 2.5% and 97.5% quantiles over the episodes
    # (at these counts, farther from its steps than 10,000 resamples err).
    n = sum(episodes)
    expected = tuple(binom.ppf([0.025, 0.975], n, sum(successes) / n) / n)
    for rng_seed in range(3):
        assert seed_bootstrap_interval(successes, episodes, rng_seed) == pytest.approx(expected)


def test_seed_bootstrap_of_all_successes_or_all_failures_is_the_rate_itself():
    assert seed_bootstrap_interval([34, 34, 20], [34, 34, 20], rng_seed=0) == (1.0, 1.0)
    assert seed_bootstrap_interval([0, 0, 0], [34, 34, 20], rng_seed=0) == (0.0, 0.0)


def test_seed_bootstrap_intervals_are_a_function_of_the_episodes(monkeypatch):
    import subprocess
    import sys

    episodes = cell_episodes([16, 22, 28], [34, 34, 34]) + cell_episodes([10, 30], [34, 34], delay=4)
    intervals = [[r["seed_ci95_low"], r["seed_ci95_high"]] for r in summarize(episodes)]
    assert [[r["seed_ci95_low"], r["seed_ci95_high"]] for r in summarize(episodes[::-1])] == intervals[::-1]
    # A rewritten summary in another process, which salts `hash` differently, reproduces them.
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    script = (
        "import json, sys\n"
        "from lerobot_policy_act_rtc_alldelays.tools.study.statistics import summarize\n"
        "rows = summarize(json.load(sys.stdin))\n"
        "print(json.dumps([[r['seed_ci95_low'], r['seed_ci95_high']] for r in rows]))"
    )
    rewritten = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(episodes), capture_output=True, text=True, check=True
    )
    assert json.loads(rewritten.stdout) == intervals


def test_not_worse_when_the_references_rate_is_inside_or_below_the_candidates_interval():
    candidate = {"success_rate": 0.6, "ci95_low": 0.5, "ci95_high": 0.7, "seed_ci95_low": 0.3,
                 "seed_ci95_high": 0.9}
    verdicts = {
        rate: (not_worse(candidate, {"success_rate": rate}, "wilson"),
               not_worse(candidate, {"success_rate": rate}, "seed"))
        for rate in (0.2, 0.6, 0.7, 0.8, 0.95)
    }
    # Below both, inside both, on Wilson's edge, above Wilson's only, above both.
    assert verdicts == {0.2: (True, True), 0.6: (True, True), 0.7: (True, True), 0.8: (False, True),
                        0.95: (False, False)}
    with pytest.raises(ValueError, match="interval must be one of"):
        not_worse(candidate, {"success_rate": 0.2}, "bootstrap")


def test_the_task_scan_rule_needs_act_good_at_delay_zero_and_losing_at_delay_eight():
    rates = {(600, 0): 0.79, (600, 8): 0.5, (2000, 0): 0.95, (2000, 8): 0.9}
    assert qualifying_budgets(rates, [600, 2000]) == [2000]
    assert qualifying_budgets({**rates, (2000, 8): 0.91}, [600, 2000]) == []  # above 90% at delay 8
    assert qualifying_budgets({**rates, (2000, 0): 0.85}, [600, 2000]) == []  # the delay cost nothing


def summary_row(variant: str, mode: str, delay: int, successes: int, steps: int = 600, **extra) -> dict:
    low, high = wilson_interval(successes, 100)
    return {"budget": "equal_steps", "steps": steps, "task": "t", "demos": "unimodal", "variant": variant,
            "mode": mode, "delay": delay, "successes": successes, "episodes": 100,
            "success_rate": successes / 100, "ci95_low": low, "ci95_high": high, "seed_ci95_low": low,
            "seed_ci95_high": high, "discontinuity_mean": extra.get("discontinuity", 2.0),
            "per_seed": [{"train_seed": 0, "successes": successes}]}


def test_verdicts_judge_at_the_smallest_budget_where_act_reaches_80_percent_at_delay_zero():
    rows = [
        summary_row("act", "discard", 0, 70, steps=600),
        summary_row("default", "discard", 0, 10, steps=600),
        summary_row("act", "discard", 0, 85, steps=2000),
        summary_row("default", "discard", 0, 80, steps=2000),
        summary_row("act", "discard", 8, 70, steps=2000, discontinuity=2.0),
        summary_row("default", "discard", 8, 50, steps=2000, discontinuity=1.5),
    ]
    assert judged_budgets(rows) == {("t", "unimodal"): 2000}
    verdicts = {v["delay"]: v for v in verdict_rows(rows, ("default", "discard"))}
    assert verdicts[0]["not_worse_wilson"] and verdicts[0]["smoother"] is False  # 85 inside 80's; same joins
    assert not verdicts[8]["not_worse_wilson"] and verdicts[8]["smoother"]  # 70 above 50's; smoother joins
    # One variant's two modes share their delay-0 episodes: no verdict there.
    rows += [summary_row("default", "prefix", d, 80, steps=2000) for d in (0, 8)]
    assert [v["delay"] for v in verdict_rows(rows, ("default", "prefix"), ("default", "discard"))] == [8]


def test_a_prefix_verdict_names_the_training_seeds_below_half_of_the_same_seeds_discard_successes():
    def row(variant, mode, delay, per_seed):
        return {**summary_row(variant, mode, delay, sum(per_seed)),
                "per_seed": [{"train_seed": seed, "successes": n} for seed, n in enumerate(per_seed)]}

    rows = [
        row("act", "discard", 0, [30, 30, 30]),
        row("act", "discard", 8, [20, 20, 20]),
        row("default", "discard", 8, [30, 34, 30]),
        row("default", "prefix", 8, [14, 34, 15]),  # seed 0 below half of 30, seed 2 at half
    ]
    (verdict,) = verdict_rows(rows, ("default", "prefix"), ("default", "discard"))
    assert verdict["collapsed_seeds"] == [0]
    # Against ACT the seeds are other models: no per-seed verdict.
    (against_act,) = verdict_rows(rows, ("default", "prefix"))
    assert against_act["collapsed_seeds"] is None
    markdown = verdicts_markdown(rows, [(("default", "prefix"), ("default", "discard"))])
    assert "| **0** |" in markdown
    assert "a training seed below half of the reference's successes in 1 of 1 cells" in markdown


def test_the_study_takes_the_qualifying_tasks_where_delay_costs_act_most():
    def entry(task, d0, d8, qualifies_at):
        return {"task": task, "rates": {"600@0": d0, "600@8": d8}, "qualifies_at": qualifies_at}

    entries = [entry("small", 0.9, 0.85, [600]), entry("none", 0.5, 0.2, []), entry("large", 0.9, 0.6, [600]),
               entry("middle", 0.95, 0.8, [600])]
    assert study_tasks(entries) == ["large", "middle"]


def test_relative_actions_under_position_targets_unless_the_variant_pins_them_off(tmp_path):
    position = quick_settings(tmp_path)
    delta = replace(position, actions="delta")
    assert policy_config("default", position).predict_relative_actions
    assert not policy_config("absolute", position).predict_relative_actions
    assert not policy_config("default", delta).predict_relative_actions  # a delta is not in the state's space
    # With relative actions the model normalizes state and actions itself: the preprocessor leaves them raw.
    mapping = policy_config("default", position).normalization_mapping
    assert {kind: mode.value for kind, mode in mapping.items() if kind in ("STATE", "ENV", "ACTION")} == {
        "STATE": "IDENTITY", "ENV": "MEAN_STD", "ACTION": "IDENTITY"
    }
