"""The README's main job end to end, shortened: one expert demo at 32 px, two lerobot-train steps of a tiny
LeRobot ACT and a tiny this-policy per training seed, one four-step episode per evaluated setting; the same
command then resumes without redoing anything, and a rerun with other lerobot-train arguments retrains."""

import json

import pytest

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from lerobot_policy_act_rtc_alldelays.tools.metaworld import delay_sweep  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.metaworld.main_job import POLICY_TYPES, main  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.policy_sizes import TINY, cli_args  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.evaluation import eval_settings  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.settings import TEMPORAL_ENSEMBLE  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.study.variants import ACT  # noqa: E402

pytestmark = pytest.mark.slow

IMAGE_SIZE = 32
TRAIN_SEEDS = [1000, 1001]
# rtc_max_delay 1 keeps every delay valid for LeRobot's ACT too (DelayedChunking: delay < n_action_steps).
TINY_TRAINING = [
    *cli_args({**TINY, "chunk_size": 4, "n_action_steps": 2, "rtc_max_delay": 1}),
    "--steps=2",
    "--batch_size=2",
    "--log_freq=1",
]
RTC = POLICY_TYPES[1]
# (policy, mode, delay) of the summary: LeRobot's ACT in the chunked modes the study evaluates it in, plain
# chunking first; this policy's discard row at delay 0 is its prefix row's episodes.
ACT_SETTINGS = [
    ("act", mode, delay) for mode, delay in eval_settings(ACT, [0, 1]) if mode != TEMPORAL_ENSEMBLE
]
SETTINGS = [
    *sorted(ACT_SETTINGS, key=lambda setting: setting[1] != "discard"),
    (RTC, "discard", 0),
    (RTC, "discard", 1),
    (RTC, "prefix", 0),
    (RTC, "prefix", 1),
]


def eval_files(work):
    return {path: path.stat().st_mtime_ns for path in (work / "eval").rglob("*.json")}


def test_main_job_pools_training_seeds_resumes_and_retrains_under_other_arguments(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "lerobot_home"))
    work, output = tmp_path / "work", tmp_path / "results"
    argv = [
        *("--work-dir", str(work), "--output-dir", str(output), "--episodes", "1", "--workers", "1"),
        *("--image-size", str(IMAGE_SIZE), "--eval-episodes", "1", "--eval-max-steps", "4"),
        *TINY_TRAINING,
    ]
    main([*argv, "--train-seeds", *map(str, TRAIN_SEEDS)])

    rows = json.loads((output / "summary.json").read_text())
    assert [(r["policy"], r["mode"], r["delay"]) for r in rows] == SETTINGS
    for row in rows:
        assert {"episodes", "successes", "discontinuity_mean", "image_size"} <= row.keys()
        assert (row["episodes"], row["image_size"], row["train_steps"]) == (2, IMAGE_SIZE, 2)
        # Each row pools one episode of each training seed, on the same env seed.
        assert row["train_seeds"] == TRAIN_SEEDS and len(row["eval_seeds"]) == 1
        assert len(row["successes_per_seed"]) == 2 and sum(row["successes_per_seed"]) == row["successes"]
        assert 0 <= row["ci95_low"] <= row["success_rate"] <= row["ci95_high"] <= 1
        assert 0 <= row["seed_ci95_low"] <= row["seed_ci95_high"] <= 1
    discard, prefix = rows[SETTINGS.index((RTC, "discard", 0))], rows[SETTINGS.index((RTC, "prefix", 0))]
    shared = {key: value for key, value in discard.items() if key not in ("mode", "same_episodes_as")}
    assert shared == {key: value for key, value in prefix.items() if key != "mode"}
    assert discard["same_episodes_as"] == "prefix, delay 0"
    assert "| act | discard | 1 |" in (output / "summary.md").read_text()
    pytest.importorskip("matplotlib")
    assert (output / "summary.png").stat().st_size > 0

    # The sweep reads the action space from lerobot-train's train_config.json and refuses another one.
    checkpoint = work / "train" / RTC / "seed1000" / "checkpoints" / "last" / "pretrained_model"
    with pytest.raises(ValueError, match="pass --actions position"):
        delay_sweep.main([str(checkpoint), "--actions", "delta"])

    # Resumed with the same arguments: the dataset, every checkpoint and every evaluated setting are reused.
    saved = eval_files(work)
    assert len(saved) == len(TRAIN_SEEDS) * (len(SETTINGS) - 1)
    capsys.readouterr()
    main([*argv, "--train-seeds", *map(str, TRAIN_SEEDS)])
    printed = capsys.readouterr().out
    assert "Reusing the dataset" in printed
    for policy_type in POLICY_TYPES:
        assert f"Training {policy_type}" not in printed
        assert all(f"Reusing the {policy_type} seed {seed} checkpoint" in printed for seed in TRAIN_SEEDS)
    assert eval_files(work) == saved
    assert json.loads((output / "summary.json").read_text()) == rows

    # Other lerobot-train arguments: both checkpoints are trained again, and their settings evaluated again.
    main([*argv, "--steps=3", "--train-seeds", "1000", "--delays", "0"])
    printed = capsys.readouterr().out
    for policy_type in POLICY_TYPES:
        assert f"Retraining {policy_type} seed 1000 from scratch (--steps was 2, now 3" in printed
    rows = json.loads((output / "summary.json").read_text())
    assert {(r["train_steps"], tuple(r["train_seeds"]), r["delay"]) for r in rows} == {(3, (1000,), 0)}
    assert all(r["seed_ci95_low"] is None for r in rows)
    now = eval_files(work)
    rerun = [path for path in now if "seed1000" in path.parts and path.stem.endswith("_delay0")]
    assert len(rerun) == len([s for s in SETTINGS if s[2] == 0]) - 1  # this policy's discard is its prefix
    assert all(now[path] != saved[path] for path in rerun)
