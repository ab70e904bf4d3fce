"""The benchmark runs end to end on CPU at the smallest sizes."""

import json
from dataclasses import asdict

import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE

from lerobot_policy_act_rtc_alldelays.tools.benchmarks.benchmark import cpu_memory, main
from lerobot_policy_act_rtc_alldelays.tools.benchmarks.benchmark_delays import ONE_DELAY, STATE_ONLY
from lerobot_policy_act_rtc_alldelays.tools.benchmarks.step_timing import (
    ACT,
    OFF,
    ON,
    RTC_FIELDS,
    SHARED,
    Settings,
    build_variant,
)

TINY = Settings(
    backbone="resnet18",
    image_size=32,
    batch_size=2,
    chunk_size=2,
    rtc_max_delay=1,
    dim_model=32,
    dim_feedforward=64,
    n_layers=1,
    warmup=1,
    steps=1,
)


def cli_sizes(settings: Settings) -> list[str]:
    """`settings` as the CLI's options: a bool field as --field or --no-field."""
    args = []
    for name, value in asdict(settings).items():
        option = name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{option}" if value else f"--no-{option}")
        else:
            args.append(f"--{option}={value}")
    return args


def test_cli_writes_timings_of_every_variant(tmp_path, capsys):
    report_path = tmp_path / "benchmark.json"
    sizes = cli_sizes(TINY)
    # The memory figures need a fresh process per variant: test_cpu_memory covers them, faster.
    main(["--device=cpu", "--no-memory", f"--output-dir={tmp_path}", *sizes])

    (point,) = json.loads(report_path.read_text())["points"]
    variants, headline = point["variants"], point["headline"]
    assert set(variants) == {ON, SHARED, OFF, ACT}
    for row in variants.values():
        assert row["step_ms"] > row["forward_ms"] > row["backbone_ms"] > 0
    # Two delays (0 and 1) per sample: all delays on supervises twice the targets of a step.
    assert variants[ON]["targets_per_step"] == 2 * variants[OFF]["targets_per_step"] == 2 * 2 * 2
    assert variants[SHARED]["targets_per_step"] == variants[ON]["targets_per_step"]
    assert (
        min(headline["time_ratio_on_off"], headline["time_ratio_shared_off"], headline["time_ratio_act_off"])
        > 0
    )
    assert "| all_delays_on |" in capsys.readouterr().out


def test_cpu_memory_measures_a_step_in_a_fresh_process():
    memory = cpu_memory(ON, TINY)
    assert memory["peak_step_memory_mb"] > 0
    assert memory["encoder_activations_mb"] is not None


def test_delays_per_sample_reports_a_ratio_per_k_and_attention_mode(tmp_path, capsys):
    # Structure only: the CI's shared cores make any timing bound flaky.
    main(
        [
            "--device=cpu",
            "--delays-per-sample",
            "--state-warmup=0",
            "--state-steps=2",
            f"--output-dir={tmp_path}",
        ]
        + cli_sizes(TINY)
    )

    sizes = json.loads((tmp_path / "benchmark_delays_per_sample.json").read_text())["sizes"]
    # State-only at the study's D = 9; TINY's rtc_max_delay=1 allows K = 1 and 2 only.
    for key, ks in (("state_only", (1, 2, 3, 9)), ("image", (1, 2))):
        rows = {row["variant"]: row for row in sizes[key]["rows"]}
        expected = [ONE_DELAY] + [f"{mode}_k{k}" for mode in ("full", "shared_observation") for k in ks]
        assert list(rows) == expected
        assert rows[ONE_DELAY]["ratio_to_one_delay"] == 1.0
        settings = sizes[key]["settings"]
        for name in expected:
            row = rows[name]
            if key == "state_only" and row["attention"] == "shared_observation":
                assert "nothing to share" in row["refused"] and "ratio_to_one_delay" not in row
                continue
            assert row["refused"] is None and row["ratio_to_one_delay"] > 0 and row["step_ms"] > 0
            samples = settings["batch_size"] * settings["chunk_size"] * row["delays_per_sample"]
            assert row["targets_per_step"] == samples
    assert "refused" in capsys.readouterr().out


def test_state_only_size_is_the_studys():
    pytest.importorskip("metaworld")  # the study's modules import it
    from lerobot_policy_act_rtc_alldelays.tools.study.settings import StudySettings
    from lerobot_policy_act_rtc_alldelays.tools.study.training import policy_config

    # The study's K variants (k2, k3) are its `state` variant with K set, as the benchmark's are.
    study = policy_config("state", StudySettings())
    config = build_variant(ONE_DELAY, STATE_ONLY, torch.device("cpu"), RTC_FIELDS[OFF]).policy.config
    for field in (
        "chunk_size",
        "rtc_max_delay",
        "dim_model",
        "n_heads",
        "dim_feedforward",
        "n_encoder_layers",
        "n_decoder_layers",
        "pre_norm",
        "dropout",
        "use_vae",
        "predict_relative_actions",
        "use_state_token",
    ):
        assert getattr(config, field) == getattr(study, field), field
    for key in (OBS_STATE, OBS_ENV_STATE):
        assert config.input_features[key].shape == study.input_features[key].shape
    assert config.output_features[ACTION].shape == study.output_features[ACTION].shape
    assert STATE_ONLY.batch_size == StudySettings().batch_size
