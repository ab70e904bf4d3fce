"""The A/B comparison script end to end, on a tiny synthetic dataset and a tiny model."""

import csv
import json

from lerobot_policy_act_rtc_alldelays.ab_compare import main

MAX_DELAY = 2


def test_ab_compare_writes_results_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "ab"
    main(
        [
            "--output-dir", str(out),
            "--synthetic-episodes", "4",
            "--synthetic-episode-length", "20",
            "--holdout-episodes", "1",
            "--seeds", "0", "1",
            "--steps", "2",
            "--eval-every", "2",
            "--batch-size", "4",
            "--dim-model", "32",
            "--n-layers", "1",
            "--image-size", "32",
            "--chunk-size", "4",
            "--rtc-max-delay", str(MAX_DELAY),
        ]
    )  # fmt: skip

    for name in ("ab_loss_vs_step.png", "ab_loss_vs_seconds.png", "ab_heldout_per_delay.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "ab_results.csv") as f:
        rows = list(csv.DictReader(f))
    # Two seeds x two variants x evaluations at steps 0 and 2.
    assert len(rows) == 8
    assert {(r["variant"], r["step"]) for r in rows} == {(v, s) for v in ("off", "on") for s in ("0", "2")}

    summary = json.loads((out / "ab_summary.json").read_text())
    for regime in ("equal_steps", "equal_time"):
        table = summary[regime]["rows"]
        assert set(table) == {f"delay_{d}" for d in range(MAX_DELAY + 1)} | {"mean"}
        for entry in table.values():
            for variant in ("off", "on"):
                assert entry[variant]["mean"] > 0
                assert entry[variant]["std"] >= 0
            assert entry["verdict"] in ("on better", "off better", "no difference (within spread)")
    # Same seed: on and off start from the same weights, so the step-0 evaluations agree.
    at_start = {(r["seed"], r["variant"]): r["heldout_l1_mean"] for r in rows if r["step"] == "0"}
    assert at_start["0", "off"] == at_start["0", "on"]
    assert "| mean over delays |" in capsys.readouterr().out
