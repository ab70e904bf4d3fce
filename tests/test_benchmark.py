"""The benchmark's CLI runs end to end on CPU at the smallest sizes and writes a complete report."""

import json

from lerobot_policy_act_rtc_alldelays.benchmark import ACT, OFF, ON, main


def test_benchmark_writes_on_off_and_act(tmp_path, capsys):
    report_path = tmp_path / "benchmark.json"
    main(
        [
            "--device=cpu",
            "--backbone=resnet18",
            "--image-size=32",
            "--batch-size=2",
            "--chunk-size=2",
            "--rtc-max-delay=1",
            "--dim-model=32",
            "--dim-feedforward=64",
            "--n-layers=1",
            "--warmup=1",
            "--steps=1",
            f"--json={report_path}",
        ]
    )
    (point,) = json.loads(report_path.read_text())["points"]
    variants, headline = point["variants"], point["headline"]
    assert set(variants) == {ON, OFF, ACT}
    for row in variants.values():
        assert row["step_ms"] > 0 and row["forward_ms"] > 0
        assert row["peak_step_memory_mb"] > 0
    # Two delays per sample with all delays on: twice the supervised targets of a step.
    assert variants[ON]["targets_per_step"] == 2 * variants[OFF]["targets_per_step"] == 2 * 2 * 2
    assert headline["time_ratio_on_off"] > 0 and headline["time_ratio_act_off"] > 0
    assert headline["extra_memory_on_vs_off_mb"] is not None
    assert "| all_delays_on |" in capsys.readouterr().out
