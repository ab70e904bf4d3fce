"""MetaWorld demonstrations and the closed-loop delay sweep, kept short: every rendered step costs ~0.3 s."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from conftest import make_batch, make_policy, tiny_config  # noqa: E402
from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig  # noqa: E402
from lerobot.envs.metaworld import MetaworldEnv  # noqa: E402

from lerobot_policy_act_rtc_alldelays import (  # noqa: E402
    ACTRelativeRTCAllDelaysConfig,
    ACTRelativeRTCAllDelaysPolicy,
    make_act_relative_rtc_alldelays_pre_post_processors,
    pad_to_square_and_resize,
)
from lerobot_policy_act_rtc_alldelays.dataset_derived import init_from_dataset  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.delay_sweep import (  # noqa: E402
    ChunkStartRecorder,
    chunk_switch_changes,
    discontinuity_ratio,
    make_sweep_env,
    run_sweep,
    valid_delays,
    write_report,
)
from lerobot_policy_act_rtc_alldelays.tools.main_job import parse_arguments, train_arguments  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld_demos import (  # noqa: E402
    ACTION_NAMES,
    DEFAULT_TASK,
    IMAGE_KEY,
    STATE_KEY,
    make_expert_env,
    make_metaworld_dataset,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld_position import PositionTargets  # noqa: E402

IMAGE_SIZE = 32
SEED = 7
DEMO_STEPS = 4


def record_demo(root, actions: str):
    """One expert episode cut at `DEMO_STEPS` steps (kept although unsuccessful), 32 px images."""
    return make_metaworld_dataset(
        root,
        n_episodes=1,
        image_size=IMAGE_SIZE,
        max_steps=DEMO_STEPS,
        seed=SEED,
        keep_failed=True,
        actions=actions,
    )


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    """The demonstration in the default action space, position targets."""
    return record_demo(tmp_path_factory.mktemp("metaworld") / "demos", "position")


@pytest.fixture(scope="module")
def delta_demo_dataset(tmp_path_factory):
    return record_demo(tmp_path_factory.mktemp("metaworld") / "delta_demos", "delta")


def test_stored_pixels_are_the_preprocessor_resize_of_the_rendered_frame(demo_dataset):
    assert demo_dataset.meta.features[IMAGE_KEY]["shape"] == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert demo_dataset.meta.total_frames == DEMO_STEPS
    first = demo_dataset[0]
    assert first[IMAGE_KEY].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert first[STATE_KEY].shape == (4,) and first["action"].shape == (4,)

    # The same seed renders the same first frame; evaluation resizes it as float, storage rounds to uint8.
    env = make_expert_env("button-press-topdown-v3")
    try:
        np.random.seed(SEED)
        observation, _ = env.reset(seed=SEED)
    finally:
        env.close()
    frame = torch.from_numpy(observation["pixels"]).permute(2, 0, 1).float() / 255
    expected = pad_to_square_and_resize(frame, IMAGE_SIZE)
    assert (first[IMAGE_KEY] - expected).abs().max() <= 0.5 / 255 + 1e-6
    torch.testing.assert_close(first[STATE_KEY], torch.from_numpy(observation["agent_pos"]).float())


# Replayed through LeRobot's env, the stored actions must drive it through the stored states. Deltas are
# stored as executed (float32), so their replay is exact up to the float32 states. A position target is
# rounded to float32 on storage: ~3e-8 m at the hand's coordinates (< 1 m), which changes the replayed
# delta by at most that much per step (measured: states within 3e-8 m over 12 steps); 1e-6 m leaves room
# for MuJoCo to propagate it and is still far below one step's motion (action_scale = 1 cm).
@pytest.mark.parametrize(("actions", "atol"), [("position", 1e-6), ("delta", 1e-7)])
def test_replaying_the_stored_actions_in_the_sweep_env_reproduces_the_demo(actions, atol, request):
    dataset = request.getfixturevalue("demo_dataset" if actions == "position" else "delta_demo_dataset")
    assert dataset.meta.features["action"]["names"] == ACTION_NAMES[actions]
    frames = [dataset[i] for i in range(DEMO_STEPS)]
    states = np.stack([f[STATE_KEY].numpy() for f in frames])
    stored = np.stack([f["action"].numpy() for f in frames])
    env = make_sweep_env(MetaworldEnvConfig(task=DEFAULT_TASK), actions)
    try:
        assert isinstance(env.envs[0], PositionTargets if actions == "position" else MetaworldEnv)
        # LeRobot 0.4.4's rollout passes the task on only if the env has these attributes.
        assert hasattr(env.envs[0], "task_description") and hasattr(env.envs[0], "task")
        if actions == "position":  # each target is the last one (the command) moved by one step of <= 1 cm
            assert np.abs(np.diff(stored[:, :3], axis=0)).max() <= 0.01 + 1e-6
        np.random.seed(SEED)  # the scene, as the recording drew it
        observation, _ = env.reset(seed=[SEED])
        for state, action in zip(states, stored, strict=True):
            np.testing.assert_allclose(observation["agent_pos"][0], state, rtol=0, atol=atol)
            observation, *_ = env.step(action[None])
    finally:
        env.close()


def test_discontinuity_of_a_hand_made_action_sequence():
    # Chunks start at steps 0, 4 and 7; inside chunks every step moves by 1 (norm of (0.6, 0.8)).
    step = np.array([0.6, 0.8])
    positions = [0, 1, 2, 3, 10, 11, 12, 20]
    actions = np.stack([p * step for p in positions])
    jumps, inside = chunk_switch_changes(actions, [0, 4, 7])
    np.testing.assert_allclose(jumps, [7.0, 8.0])
    np.testing.assert_allclose(inside, [1.0] * 5)
    assert discontinuity_ratio(jumps, inside) == pytest.approx(7.5)
    assert discontinuity_ratio([], inside) is None
    # A chunk starting at step 0 or beyond the episode is no switch.
    assert len(chunk_switch_changes(actions, [0, 8, 9])[0]) == 0


@pytest.mark.parametrize("mode", ["prefix", "discard"])
def test_chunk_starts_are_recorded_where_the_first_action_of_each_chunk_executes(mode):
    policy = make_policy(
        chunk_size=5, n_action_steps=4, rtc_max_delay=1, rtc_inference_delay=1, rtc_inference_mode=mode
    )
    policy.eval()
    recorder = ChunkStartRecorder(policy)
    policy.reset()
    batch = make_batch(policy.config, batch_size=1)
    for _ in range(10):
        policy.select_action(batch)
    # Each chunk contributes n_action_steps actions, whatever the delay.
    assert recorder.chunk_starts == [0, 4, 8]


def test_valid_delays_follow_the_config_rules():
    config = make_policy(chunk_size=8, n_action_steps=5, rtc_max_delay=2).config
    assert valid_delays(config, "prefix") == [0, 1, 2]
    assert valid_delays(config, "discard") == [0, 1, 2, 3]  # delay + n_action_steps <= chunk_size
    assert (config.rtc_inference_mode, config.rtc_inference_delay) == ("prefix", 0)


@pytest.fixture(scope="module")
def tiny_checkpoint(demo_dataset, tmp_path_factory):
    """An untrained tiny policy saved like lerobot-train saves it (config, weights with the dataset's
    relative-action statistics, both processors), with relative actions as the main job trains it."""
    config = tiny_config(
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(4,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
        downscale_img_square=IMAGE_SIZE,
        chunk_size=4,
        n_action_steps=2,
        rtc_max_delay=1,
    )
    torch.manual_seed(0)
    policy = ACTRelativeRTCAllDelaysPolicy(config)
    init_from_dataset(policy, demo_dataset.meta)  # what make_policy does with the dataset in lerobot-train
    preprocessor, postprocessor = make_act_relative_rtc_alldelays_pre_post_processors(
        config, demo_dataset.meta.stats
    )
    path = tmp_path_factory.mktemp("checkpoint") / "pretrained_model"
    for component in (policy, preprocessor, postprocessor):
        component.save_pretrained(path)
    return path


def test_delay_sweep_writes_both_measures_per_mode_and_delay(tiny_checkpoint, tmp_path):
    report = run_sweep(tiny_checkpoint, n_episodes=1, max_steps=5, delays=[0, 1, 2])
    assert report["actions"] == "position"
    # prefix: delays 0..rtc_max_delay=1; discard: delay < n_action_steps=2 (delay 2 is invalid for both).
    assert [(r["mode"], r["delay"]) for r in report["results"]] == [
        ("prefix", 0),
        ("prefix", 1),
        ("discard", 0),
        ("discard", 1),
    ]
    for result in report["results"]:
        assert result["n_episodes"] == 1 and result["episodes"][0]["steps"] == 5
        assert result["n_switches"] == 2  # chunks of 2 actions: switches at steps 2 and 4
        assert 0.0 <= result["success_rate"] <= 1.0
        assert result["discontinuity"] is None or result["discontinuity"] >= 0.0
    table = write_report(report, tmp_path)
    saved = json.loads((tmp_path / "delay_sweep.json").read_text())
    assert saved["rtc_max_delay"] == 1 and len(saved["results"]) == 4
    assert "| discard | 1 |" in table and (tmp_path / "delay_sweep.md").exists()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "delay_sweep.png").stat().st_size > 0


def test_main_job_overrides_replace_the_lerobot_train_defaults(demo_dataset, tmp_path):
    arguments = train_arguments(
        demo_dataset, tmp_path / "train", IMAGE_SIZE, ["--steps=10", "--policy.dim_model=64"]
    )
    assert {"--steps=10", "--save_freq=10", "--policy.dim_model=64"} <= set(arguments)
    assert not any(a.startswith("--policy.dim_model=128") for a in arguments)
    assert f"--policy.downscale_img_square={IMAGE_SIZE}" in arguments
    assert f"--dataset.root={demo_dataset.meta.root}" in arguments
    with pytest.raises(ValueError, match="--key=value"):
        train_arguments(demo_dataset, tmp_path / "train", IMAGE_SIZE, ["--steps", "10"])


@pytest.mark.parametrize(("argv", "relative"), [([], True), (["--actions", "delta"], False)])
def test_main_job_trains_relative_actions_by_default_and_absolute_deltas_on_request(
    argv, relative, demo_dataset, tmp_path
):
    args, overrides = parse_arguments([*argv, "--steps=10"])
    assert args.actions == ("position" if relative else "delta") and overrides == ["--steps=10"]
    arguments = train_arguments(demo_dataset, tmp_path / "train", IMAGE_SIZE, overrides, args.actions)
    flags = [a for a in arguments if a.startswith("--policy.predict_relative_actions=")]
    # Position targets leave the flag to the policy's default, which is relative actions.
    assert flags == ([] if relative else ["--policy.predict_relative_actions=false"])
    assert ACTRelativeRTCAllDelaysConfig().predict_relative_actions
