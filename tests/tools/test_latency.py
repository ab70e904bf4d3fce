"""The latency tool: measures a checkpoint against LeRobot's ACT and turns p99 into runtime settings."""

import json

import pytest
from conftest import TINY_RTC, make_policy

from lerobot_policy_act_rtc_alldelays.tools.benchmarks.latency import (
    ACT,
    ACT_NO_WEIGHTS,
    THIS_POLICY,
    main,
    measure,
    runtime_settings,
    summarize,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "pretrained_model"
    make_policy(chunk_size=8, n_action_steps=8, rtc_max_delay=3).save_pretrained(path)
    return path


def test_latency_tool_prints_the_implied_delay_and_a_rollout_command(tiny_checkpoint, tmp_path, capsys):
    main([str(tiny_checkpoint), "--fps", "30", "--warmup", "1", "--iterations", "3", "--threads", "1",
          "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "latency.json").read_text())
    assert set(report["latency_ms"]) == {THIS_POLICY, ACT, ACT_NO_WEIGHTS}
    assert all(len(values) == 3 for values in report["seconds"].values())
    # The backbone runs once per call in every variant and takes part of the call's time.
    for name, totals in report["seconds"].items():
        assert all(0 < bb < total for bb, total in zip(report["backbone_seconds"][name], totals, strict=True))
    assert f"= {report['implied_delay']} control steps" in printed
    assert "lerobot-rollout --strategy.type=base" in printed and "--inference.type=rtc" in printed
    assert f"--policy.path={tiny_checkpoint}" in printed
    assert (tmp_path / "latency.md").read_text().strip() in printed


def test_p99_becomes_the_delay_and_the_queue_threshold(tiny_checkpoint):
    measurement = {
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
        "sizes": {"chunk_size": 8, "n_action_steps": 8, "rtc_max_delay": 3},
        "seconds": {THIS_POLICY: [0.05] * 95 + [0.09] * 5, ACT: [0.05] * 100, ACT_NO_WEIGHTS: [0.05] * 100},
        "backbone_seconds": {name: [0.04] * 100 for name in (THIS_POLICY, ACT, ACT_NO_WEIGHTS)},
    }
    summary = summarize(measurement, fps=30)
    assert summary["latency_ms"][THIS_POLICY]["p50_ms"] == pytest.approx(50.0)
    assert summary["outside_backbone_p50_ms"][ACT] == pytest.approx(10.0)
    assert summary["implied_delay"] == 3  # ceil(0.09 s x 30 fps)
    assert summary["rtc_max_delay_covers_it"]
    assert "--inference.queue_threshold=3" in summary["rollout_command"]
    slow = summarize({**measurement, "seconds": {**measurement["seconds"], THIS_POLICY: [0.2] * 100}}, fps=30)
    assert slow["implied_delay"] == 6 and not slow["rtc_max_delay_covers_it"]


def test_runtime_settings_keep_n_action_steps_per_chunk():
    config = make_policy(chunk_size=8, n_action_steps=6, rtc_max_delay=3).config
    settings = runtime_settings(config, fps=30, delay=2)
    # A chunk holds 8 actions after the runtime's skip; asking again with 4 left executes 4 of them, and
    # the 2 that run during the next inference make n_action_steps = 6.
    assert settings == {
        "fps": 30,
        "execution_horizon": 8,
        "queue_threshold": 4,
        "interpolation_multiplier": 1,
    }


def test_a_training_config_is_measured_at_its_sizes_before_training(tmp_path):
    config = {
        "policy": {
            "type": "act_relative_rtc_alldelays",
            "input_features": {
                "observation.state": {"type": "STATE", "shape": [4]},
                "observation.images.wrist": {"type": "VISUAL", "shape": [3, 48, 64]},
            },
            **TINY_RTC,
            "chunk_size": 4,
            "n_action_steps": 4,
            "rtc_max_delay": 2,
            "use_vae": False,
            "downscale_img_square": 32,
        }
    }
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(config))
    summary = summarize(measure(path, warmup=1, iterations=2), fps=30)
    assert summary["image_sides"] == {"observation.images.wrist": (32, 32)}  # the preprocessor's resize
    assert summary["sizes"]["chunk_size"] == 4 and summary["rtc_max_delay"] == 2
    assert "--policy.path=<checkpoint>" in summary["rollout_command"]
