"""MetaWorld demonstrations and the closed-loop delay sweep, kept short: every rendered step costs ~0.3 s."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from conftest import make_batch, make_policy, tiny_config  # noqa: E402
from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402

from lerobot_policy_act_rtc_alldelays import (  # noqa: E402
    ACTRelativeRTCAllDelaysPolicy,
    make_act_relative_rtc_alldelays_pre_post_processors,
    pad_to_square_and_resize,
)
from lerobot_policy_act_rtc_alldelays.tools.delay_sweep import (  # noqa: E402
    ChunkStartRecorder,
    chunk_switch_changes,
    discontinuity_ratio,
    run_sweep,
    valid_delays,
    write_report,
)
from lerobot_policy_act_rtc_alldelays.tools.main_job import train_arguments  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld_demos import (  # noqa: E402
    IMAGE_KEY,
    STATE_KEY,
    make_expert_env,
    make_metaworld_dataset,
)

IMAGE_SIZE = 32
SEED = 7


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    """One expert episode cut at 4 steps (kept although unsuccessful), 32 px images."""
    return make_metaworld_dataset(
        tmp_path_factory.mktemp("metaworld") / "demos",
        n_episodes=1,
        image_size=IMAGE_SIZE,
        max_steps=4,
        seed=SEED,
        keep_failed=True,
    )


def test_stored_pixels_are_the_preprocessor_resize_of_the_rendered_frame(demo_dataset):
    assert demo_dataset.meta.features[IMAGE_KEY]["shape"] == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert demo_dataset.meta.total_frames == 4
    first = demo_dataset[0]
    assert first[IMAGE_KEY].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert first[STATE_KEY].shape == (4,) and first["action"].shape == (4,)
    assert first["action"].abs().max() <= 1.0

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
    """An untrained tiny policy saved like lerobot-train saves it (config, weights, both processors)."""
    config = tiny_config(
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(4,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
        predict_relative_actions=False,
        downscale_img_square=IMAGE_SIZE,
        chunk_size=4,
        n_action_steps=2,
        rtc_max_delay=1,
    )
    torch.manual_seed(0)
    policy = ACTRelativeRTCAllDelaysPolicy(config)
    preprocessor, postprocessor = make_act_relative_rtc_alldelays_pre_post_processors(
        config, demo_dataset.meta.stats
    )
    path = tmp_path_factory.mktemp("checkpoint") / "pretrained_model"
    for component in (policy, preprocessor, postprocessor):
        component.save_pretrained(path)
    return path


def test_delay_sweep_writes_both_measures_per_mode_and_delay(tiny_checkpoint, tmp_path):
    report = run_sweep(tiny_checkpoint, n_episodes=1, max_steps=5, delays=[0, 1, 2])
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
    assert {"--policy.predict_relative_actions=false", f"--policy.downscale_img_square={IMAGE_SIZE}"} <= set(
        arguments
    )
    assert f"--dataset.root={demo_dataset.meta.root}" in arguments
    with pytest.raises(ValueError, match="--key=value"):
        train_arguments(demo_dataset, tmp_path / "train", IMAGE_SIZE, ["--steps", "10"])
