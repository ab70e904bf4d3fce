"""The A/B comparison script end to end, on a tiny synthetic dataset and a tiny model."""

import csv
import json

import pytest
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

from lerobot_policy_act_rtc_alldelays.tools.benchmarks.ab_compare import initial_policy, main, parse_args

MAX_DELAY = 2
VARIANTS = ("off", "on", "shared")
PAIRS = ("on_vs_off", "shared_vs_off", "shared_vs_on")
NO_DIFFERENCE = "no difference (within spread)"


def test_ab_compare_writes_results_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "ab"
    argv = [
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
    ]  # fmt: skip
    main(argv)

    for name in ("ab_loss_vs_step.png", "ab_loss_vs_seconds.png", "ab_heldout_per_delay.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "ab_results.csv") as f:
        rows = list(csv.DictReader(f))
    # Two seeds x three variants x evaluations at steps 0 and 2, every one with a held-out L1 per delay.
    assert len(rows) == 12
    assert {(r["variant"], r["step"]) for r in rows} == {(v, s) for v in VARIANTS for s in ("0", "2")}
    for row in rows:
        assert all(float(row[f"heldout_l1_delay_{d}"]) > 0 for d in range(MAX_DELAY + 1))
    # The training order rotates across seeds.
    order = {seed: [r["variant"] for r in rows if r["seed"] == seed and r["step"] == "0"] for seed in "01"}
    assert order == {"0": ["off", "on", "shared"], "1": ["on", "shared", "off"]}

    summary = json.loads((out / "ab_summary.json").read_text())
    assert summary["dataset_root"] == str((out / "synthetic_dataset").resolve())
    assert summary["dataset_synthetic"] is True
    for regime in ("equal_steps", "equal_time"):
        table = summary[regime]["rows"]
        assert set(table) == {f"delay_{d}" for d in range(MAX_DELAY + 1)} | {"mean"}
        for entry in table.values():
            for variant in VARIANTS:
                assert entry[variant]["mean"] > 0
                assert entry[variant]["std"] >= 0
            assert set(entry["verdicts"]) == set(PAIRS)
            for pair, verdict in entry["verdicts"].items():
                candidate, baseline = pair.split("_vs_")
                assert verdict in (f"{candidate} better", f"{baseline} better", NO_DIFFERENCE)
    # Same seed: every variant starts from the same weights (the modes differ only in masks and loss; the
    # checkpoint's record of the attention mode aside), so on and off, which also share their attention,
    # agree at step 0.
    args = parse_args(argv)
    meta = LeRobotDatasetMetadata(args.repo_id, root=out / "synthetic_dataset")
    off_weights = initial_policy("off", 0, args, meta).state_dict()
    learned = [k for k in off_weights if k != "trained_prefix_attention"]
    for variant in ("on", "shared"):
        weights = initial_policy(variant, 0, args, meta).state_dict()
        assert weights.keys() == off_weights.keys()
        assert all(torch.equal(weights[k], off_weights[k]) for k in learned), variant
    at_start = {(r["seed"], r["variant"]): r["heldout_l1_mean"] for r in rows if r["step"] == "0"}
    assert at_start["0", "off"] == at_start["0", "on"]
    printed = capsys.readouterr().out
    assert "| mean over delays |" in printed
    assert "| shared vs on |" in printed


@pytest.mark.parametrize("variants", [["on", "shared"], ["off"]])
def test_variants_must_include_the_baseline_and_one_more(variants, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--variants", *variants])
    assert "--variants" in capsys.readouterr().err
