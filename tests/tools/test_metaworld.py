"""MetaWorld demonstrations and the closed-loop delay sweep, kept short: every rendered step costs ~0.3 s."""

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from conftest import make_batch, make_policy, tiny_config  # noqa: E402
from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig  # noqa: E402
from lerobot.envs.metaworld import MetaworldEnv  # noqa: E402
from lerobot.policies.act.configuration_act import ACTConfig  # noqa: E402
from lerobot.policies.act.modeling_act import ACTPolicy  # noqa: E402
from lerobot.policies.factory import make_pre_post_processors  # noqa: E402

from lerobot_policy_act_rtc_alldelays import (  # noqa: E402
    ACTRelativeRTCAllDelaysConfig,
    ACTRelativeRTCAllDelaysPolicy,
    make_act_relative_rtc_alldelays_pre_post_processors,
    pad_to_square_and_resize,
)
from lerobot_policy_act_rtc_alldelays.dataset_derived import init_from_dataset  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld import delay_sweep  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld.delay_sweep import (  # noqa: E402
    ChunkStartRecorder,
    check_trained_actions,
    chunk_switch_changes,
    discontinuity_ratio,
    make_sweep_env,
    run_sweep,
    sweep_markdown,
    valid_delays,
    write_report,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld.demos import (  # noqa: E402
    ACTION_NAMES,
    DEFAULT_TASK,
    IMAGE_KEY,
    STATE_KEY,
    lerobot_mujoco_env,
    make_expert_env,
    make_metaworld_dataset,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld.frames import render_frames_at  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld.main_job import (  # noqa: E402
    POLICY_TYPES,
    TRAIN_RECORD,
    job_settings,
    note_unrecorded_checkpoint,
    parse_arguments,
    recorded_dataset,
    summary_row,
    train_arguments,
    trained_checkpoint,
)
from lerobot_policy_act_rtc_alldelays.tools.metaworld.position import PositionTargets  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.policy_sizes import TINY  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.evaluation import eval_settings  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.settings import TEMPORAL_ENSEMBLE  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.statistics import (  # noqa: E402
    cell_rng_seed,
    seed_bootstrap_interval,
)
from lerobot_policy_act_rtc_alldelays.tools.study.variants import ACT  # noqa: E402

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


def test_small_frames_render_at_their_declared_size_without_shadows():
    env = make_expert_env(DEFAULT_TASK, frame_size=IMAGE_SIZE)
    try:
        mujoco_env = lerobot_mujoco_env(env)
        assert mujoco_env.model.vis.quality.shadowsize == 0
        np.random.seed(SEED)
        observation, _ = env.reset(seed=SEED)
        declared = env.observation_space["pixels"].shape
        assert observation["pixels"].shape == declared == (IMAGE_SIZE, IMAGE_SIZE, 3)
        # The size is fixed with the renderer's OpenGL context, at the first frame.
        with pytest.raises(RuntimeError, match="before its first frame"):
            render_frames_at(mujoco_env, 64)
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


def test_main_job_leaves_out_the_settings_a_checkpoint_without_delays_cannot_run(capsys):
    rtc = POLICY_TYPES[1]
    trained_with_delays = make_policy(chunk_size=18, n_action_steps=9, rtc_max_delay=8).config
    assert job_settings(rtc, trained_with_delays, [0, 8]) == [("prefix", 0), ("prefix", 8), ("discard", 8)]
    assert capsys.readouterr().out == ""

    without_delays = make_policy(chunk_size=18, n_action_steps=9, rtc_max_delay=0).config
    assert job_settings(rtc, without_delays, [0, 8]) == [("prefix", 0), ("discard", 8)]
    printed = capsys.readouterr().out
    assert f"Leaving out {rtc} in prefix mode at delay 8" in printed
    assert "exceeds `rtc_max_delay` (0)" in printed


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


def test_delay_sweep_runs_the_same_weights_with_the_blend_it_is_given(tiny_checkpoint):
    settings = dict(n_episodes=1, max_steps=6, modes=["discard"], delays=[0])
    as_saved = run_sweep(tiny_checkpoint, **settings)
    unblended = run_sweep(tiny_checkpoint, **settings, blend_steps=0)
    # chunk_size 4, n_action_steps 2: the default blends half of the overlap of 2, one step.
    assert (as_saved["blend_steps"], unblended["blend_steps"]) == (1, 0)
    assert as_saved["results"][0]["discontinuity"] != unblended["results"][0]["discontinuity"]
    assert "blend_steps 0" in sweep_markdown(unblended)
    with pytest.raises(ValueError, match=r"`rtc_blend_steps` \(3\) exceeds `n_action_steps` \(2\)"):
        run_sweep(tiny_checkpoint, **settings, blend_steps=3)


def test_main_job_overrides_replace_the_lerobot_train_defaults(demo_dataset, tmp_path):
    overrides = ["--steps=10", "--policy.dim_model=64"]
    arguments = train_arguments(POLICY_TYPES[1], demo_dataset, tmp_path / "train", IMAGE_SIZE, overrides)
    assert {"--steps=10", "--save_freq=10", "--policy.dim_model=64"} <= set(arguments)
    assert not any(a.startswith("--policy.dim_model=128") for a in arguments)
    assert f"--policy.downscale_img_square={IMAGE_SIZE}" in arguments
    assert f"--dataset.root={demo_dataset.meta.root}" in arguments
    with pytest.raises(ValueError, match="--key=value"):
        train_arguments(POLICY_TYPES[1], demo_dataset, tmp_path / "train", IMAGE_SIZE, ["--steps", "10"])


def test_main_job_trains_each_seed_with_its_own_lerobot_train_seed_and_refuses_seed_overrides(
    demo_dataset, tmp_path
):
    for seed in (1000, 1001):
        arguments = train_arguments(POLICY_TYPES[0], demo_dataset, tmp_path, IMAGE_SIZE, [], seed=seed)
        assert [a for a in arguments if a.startswith("--seed=")] == [f"--seed={seed}"]
    assert parse_arguments(["--train-seeds", "1000", "1001"])[0].train_seeds == [1000, 1001]
    with pytest.raises(SystemExit):
        parse_arguments(["--seed=3"])
    with pytest.raises(ValueError, match="pass --train-seeds instead of '--seed=3'"):
        train_arguments(POLICY_TYPES[0], demo_dataset, tmp_path, IMAGE_SIZE, ["--seed=3"])


def test_main_job_trains_lerobots_act_like_this_policy_without_this_policys_fields(demo_dataset, tmp_path):
    overrides = ["--steps=10", "--policy.dim_model=64", "--policy.rtc_prefix_dropout=0.25"]
    act, rtc = (
        train_arguments(policy_type, demo_dataset, tmp_path / policy_type, IMAGE_SIZE, overrides)
        for policy_type in POLICY_TYPES
    )
    assert "--policy.type=act" in act and "--policy.type=act_relative_rtc_alldelays" in rtc

    def shared(arguments):
        return {a for a in arguments if not a.startswith(("--policy.type=", "--output_dir="))}

    # The same sizes, chunking, steps, batches and seed; this policy's own fields only for it.
    assert shared(act) < shared(rtc)
    assert {"--policy.chunk_size=18", "--policy.n_action_steps=9", "--steps=10", "--seed=1000"} <= set(act)
    assert "--seed=1000" in rtc
    assert {a.split("=")[0] for a in shared(rtc) - shared(act)} == {
        "--policy.rtc_max_delay",
        "--policy.downscale_img_square",
        "--policy.rtc_prefix_dropout",
    }


@pytest.mark.parametrize(("argv", "relative"), [([], True), (["--actions", "delta"], False)])
def test_main_job_trains_relative_actions_by_default_and_absolute_deltas_on_request(
    argv, relative, demo_dataset, tmp_path
):
    args, overrides = parse_arguments([*argv, "--steps=10"])
    assert args.actions == ("position" if relative else "delta") and overrides == ["--steps=10"]
    for policy_type in POLICY_TYPES:
        arguments = train_arguments(
            policy_type, demo_dataset, tmp_path / policy_type, IMAGE_SIZE, overrides, args.actions
        )
        flags = [a for a in arguments if a.startswith("--policy.predict_relative_actions=")]
        # Position targets leave the flag to the policy's default, which is relative actions; LeRobot's ACT
        # has no such field: it predicts absolute actions.
        expected = [] if relative or policy_type == "act" else ["--policy.predict_relative_actions=false"]
        assert flags == expected
    assert ACTRelativeRTCAllDelaysConfig().predict_relative_actions


def test_main_job_refuses_a_work_dirs_dataset_recorded_under_other_settings(tmp_path):
    args, _ = parse_arguments(["--work-dir", str(tmp_path), "--image-size", "96"])
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit, match="no recording.json: an interrupted recording"):
        recorded_dataset(args, "[1/4]")
    recorded = {"task": args.task, "actions": "position", "episodes": args.episodes, "image_size": 64}
    (tmp_path / "recording.json").write_text(json.dumps({**recorded, "demo_seed": args.demo_seed}))
    with pytest.raises(SystemExit, match="'image_size': 64.*'image_size': 96.*another --work-dir"):
        recorded_dataset(args, "[1/4]")


def with_train_config(checkpoint, dataset, tmp_path):
    """A copy of `checkpoint` with the part of lerobot-train's `train_config.json` that names its dataset."""
    copy = tmp_path / "pretrained_model"
    shutil.copytree(checkpoint, copy)
    named = {"repo_id": dataset.meta.repo_id, "root": str(dataset.meta.root)}
    (copy / "train_config.json").write_text(json.dumps({"dataset": named}))
    return copy


def test_delay_sweep_refuses_actions_other_than_the_checkpoints_dataset_recorded(
    tiny_checkpoint, delta_demo_dataset, tmp_path
):
    checkpoint = with_train_config(tiny_checkpoint, delta_demo_dataset, tmp_path)
    check_trained_actions(checkpoint, "delta")  # what it was trained on: accepted
    with pytest.raises(ValueError, match=r"trained on delta actions \(\['delta_x'.*pass --actions delta\.$"):
        delay_sweep.main([str(checkpoint), "--actions", "position", "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_act_checkpoint(demo_dataset, tmp_path_factory):
    """An untrained tiny LeRobot ACT on the demos' 32 px images, saved with its processors."""
    config = ACTConfig(
        **{**TINY, "chunk_size": 4, "n_action_steps": 2},
        device="cpu",
        use_vae=False,
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(4,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("act_checkpoint") / "pretrained_model"
    processors = make_pre_post_processors(config, dataset_stats=demo_dataset.meta.stats)
    for component in (ACTPolicy(config), *processors):
        component.save_pretrained(path)
    return path


def test_delay_sweep_runs_lerobots_act_in_the_studys_modes_on_frames_of_its_image_size(tiny_act_checkpoint):
    # ACT does not resize its images: LeRobot's 480 px frames are refused.
    with pytest.raises(ValueError, match=f"Pass --frame-size {IMAGE_SIZE}"):
        run_sweep(tiny_act_checkpoint, n_episodes=1, max_steps=5)
    report = run_sweep(
        tiny_act_checkpoint, n_episodes=1, max_steps=5, delays=[0, 1, 2], frame_size=IMAGE_SIZE
    )
    assert (report["policy"], report["rtc_max_delay"], report["frame_size"]) == ("act", None, IMAGE_SIZE)
    # The chunked modes the study evaluates ACT in, whatever they are; their `DelayedChunking` needs delay <
    # n_action_steps = 2.
    studied = [(mode, delay) for mode, delay in eval_settings(ACT, [0, 1]) if mode != TEMPORAL_ENSEMBLE]
    assert ("discard", 1) in studied
    assert [(r["mode"], r["delay"]) for r in report["results"]] == studied
    for result in report["results"]:
        assert result["episodes"][0]["steps"] == 5
        assert result["n_switches"] == 2  # chunks of 2 actions: switches at steps 2 and 4


# A stand-in for lerobot-train's record of a dataset: the job's arguments name its repo id and root only.
FAKE_DATASET = SimpleNamespace(meta=SimpleNamespace(repo_id="local/metaworld_test", root="/data/metaworld"))


@pytest.fixture
def fake_lerobot_train(monkeypatch):
    """Replaces the lerobot-train run of `trained_checkpoint` with one that, like lerobot-train, refuses an
    existing output dir and saves the last checkpoint's config with its `--steps`; returns the commands."""
    commands = []

    def run(command, check):
        arguments = dict(argument.split("=", 1) for argument in command[1:])
        output_dir = Path(arguments["--output_dir"])
        assert not output_dir.exists(), "lerobot-train refuses an existing output dir"
        checkpoint = output_dir / "checkpoints" / "last" / "pretrained_model"
        checkpoint.mkdir(parents=True)
        (checkpoint / "train_config.json").write_text(json.dumps({"steps": int(arguments["--steps"])}))
        commands.append(command)

    monkeypatch.setattr(subprocess, "run", run)
    return commands


def train(work_dir, argv, policy_type=POLICY_TYPES[0], seed=1000):
    args, overrides = parse_arguments(["--work-dir", str(work_dir), *argv])
    checkpoint = trained_checkpoint(policy_type, seed, FAKE_DATASET, args, overrides, "[2/4]")
    return json.loads((checkpoint / "train_config.json").read_text())["steps"]


def test_delay_sweep_refuses_a_blend_for_lerobots_act(tiny_act_checkpoint):
    with pytest.raises(ValueError, match="LeRobot's ACT has none"):
        run_sweep(tiny_act_checkpoint, n_episodes=1, max_steps=5, frame_size=IMAGE_SIZE, blend_steps=0)


def test_main_job_retrains_a_checkpoint_trained_with_other_lerobot_train_arguments(
    fake_lerobot_train, tmp_path, capsys
):
    assert train(tmp_path, ["--steps=2"]) == 2
    capsys.readouterr()
    assert train(tmp_path, ["--steps=10"]) == 10
    assert len(fake_lerobot_train) == 2
    printed = capsys.readouterr().out
    assert (
        "Retraining act seed 1000 from scratch (--steps was 2, now 10; --save_freq was 2, now 10)" in printed
    )
    assert "Reusing" not in printed
    # The earlier training is moved aside, not lost.
    assert (tmp_path / "train" / POLICY_TYPES[0] / "seed1000.previous" / TRAIN_RECORD).is_file()


def test_main_job_reuses_a_checkpoint_trained_with_the_same_arguments_even_in_a_moved_work_dir(
    fake_lerobot_train, tmp_path, capsys
):
    train(tmp_path / "work", ["--steps=2"], seed=1001)
    shutil.move(tmp_path / "work", tmp_path / "moved")
    assert train(tmp_path / "moved", ["--steps=2"], seed=1001) == 2
    assert len(fake_lerobot_train) == 1
    assert "Reusing the act seed 1001 checkpoint" in capsys.readouterr().out


def test_main_job_trains_each_seed_apart(fake_lerobot_train, tmp_path, capsys):
    train(tmp_path, ["--steps=2"], seed=1000)
    capsys.readouterr()
    train(tmp_path, ["--steps=2"], seed=1001)  # another seed, another model
    assert len(fake_lerobot_train) == 2 and "--seed=1001" in fake_lerobot_train[1]
    assert "Reusing" not in capsys.readouterr().out


def test_main_job_retrains_a_checkpoint_without_a_record_of_its_arguments(
    fake_lerobot_train, tmp_path, capsys
):
    train(tmp_path, ["--steps=2"])
    (tmp_path / "train" / POLICY_TYPES[0] / "seed1000" / TRAIN_RECORD).unlink()
    capsys.readouterr()
    train(tmp_path, ["--steps=2"])
    assert len(fake_lerobot_train) == 2
    assert "Retraining act seed 1000 from scratch (its checkpoint has no record" in capsys.readouterr().out


def test_main_job_leaves_an_older_versions_checkpoint_unused_and_in_place(tmp_path, capsys):
    old_output = tmp_path / "train" / POLICY_TYPES[0]
    (old_output / "checkpoints" / "last" / "pretrained_model").mkdir(parents=True)
    args, _ = parse_arguments(["--work-dir", str(tmp_path)])
    note_unrecorded_checkpoint(POLICY_TYPES[0], args, "[2/4]")
    assert (old_output / "checkpoints" / "last" / "pretrained_model").is_dir()
    assert "Not using the act checkpoint" in capsys.readouterr().out


def sweep_report(mode: str, delay: int, successes: list[bool], discontinuity: float) -> dict:
    """A delay sweep's report of one setting, with the fields a summary row reads."""
    episodes = [
        {"seed": 100 + i, "success": s, "steps": 10, "n_switches": 2, "discontinuity": discontinuity}
        for i, s in enumerate(successes)
    ]
    result = {
        "mode": mode,
        "delay": delay,
        "n_episodes": len(episodes),
        "successes": sum(successes),
        "n_switches": 2 * len(episodes),
        "switch_jump_mean": discontinuity,
        "inside_change_mean": 1.0,
        "discontinuity": discontinuity,
        "mean_steps": 10.0,
        "episodes": episodes,
    }
    shared = {"task": "t", "actions": "position", "chunk_size": 4, "n_action_steps": 2, "rtc_max_delay": 1}
    return {**shared, "seeds": [100 + i for i in range(len(episodes))], "max_steps": 10, "results": [result]}


def test_a_main_job_summary_row_pools_the_training_seeds_with_both_intervals():
    reports = [(1000, sweep_report("blend", 1, [True, True, False], 2.0))]
    reports.append((1001, sweep_report("blend", 1, [False, False, False], 4.0)))
    row = summary_row("act", reports, IMAGE_SIZE, train_steps=2)
    assert (row["mode"], row["delay"], row["train_seeds"]) == ("blend", 1, [1000, 1001])
    assert (row["episodes"], row["successes"], row["successes_per_seed"]) == (6, 2, [2, 0])
    assert row["discontinuity_mean"] == row["discontinuity_pooled"] == pytest.approx(3.0)
    assert 0 <= row["ci95_low"] < 2 / 6 < row["ci95_high"] <= 1
    expected = seed_bootstrap_interval([2, 0], [3, 3], cell_rng_seed(("act", "blend", 1)))
    assert (row["seed_ci95_low"], row["seed_ci95_high"]) == expected


def test_a_main_job_summary_row_of_one_training_seed_has_no_seed_bootstrap_interval():
    row = summary_row("act", [(1000, sweep_report("discard", 0, [True, False], 2.0))], IMAGE_SIZE, 2)
    assert (row["train_seeds"], row["successes_per_seed"]) == ([1000], [1])
    assert row["seed_ci95_low"] is row["seed_ci95_high"] is None
