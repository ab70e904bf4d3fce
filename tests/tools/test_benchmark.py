"""The benchmark runs end to end on CPU at the smallest sizes."""

import json
from dataclasses import asdict

from lerobot_policy_act_rtc_alldelays.tools.benchmark import ACT, OFF, ON, SHARED, Settings, cpu_memory, main

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


def test_cli_writes_timings_of_every_variant(tmp_path, capsys):
    report_path = tmp_path / "benchmark.json"
    sizes = [f"--{name.replace('_', '-')}={value}" for name, value in asdict(TINY).items()]
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
