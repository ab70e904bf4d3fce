"""The README's main job end to end, shortened: one expert demo at 32 px, two lerobot-train steps of a tiny
LeRobot ACT and a tiny this-policy, one four-step episode per evaluated setting; then the same command
resumes without redoing anything."""

import json

import pytest

pytest.importorskip("metaworld")  # the `metaworld` extra; the modules below import it

from lerobot_policy_act_rtc_alldelays.tools import delay_sweep  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.main_job import POLICY_TYPES, main  # noqa: E402
from lerobot_policy_act_rtc_alldelays.tools.policy_sizes import TINY, cli_args  # noqa: E402

pytestmark = pytest.mark.slow

IMAGE_SIZE = 32
# rtc_max_delay 1 keeps every delay valid for LeRobot's ACT too (DelayedChunking: delay < n_action_steps).
TINY_TRAINING = [
    *cli_args({**TINY, "chunk_size": 4, "n_action_steps": 2, "rtc_max_delay": 1}),
    "--steps=2",
    "--batch_size=2",
    "--log_freq=1",
]
# (policy, mode, delay) of the summary: ACT in plain chunking; this policy's discard row at delay 0 is its
# prefix row's episodes.
SETTINGS = [
    ("act", "discard", 0),
    ("act", "discard", 1),
    ("act_relative_rtc_alldelays", "discard", 0),
    ("act_relative_rtc_alldelays", "discard", 1),
    ("act_relative_rtc_alldelays", "prefix", 0),
    ("act_relative_rtc_alldelays", "prefix", 1),
]


def test_main_job_trains_and_evaluates_both_policies_writes_the_summary_and_resumes(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "lerobot_home"))
    work, output = tmp_path / "work", tmp_path / "results"
    argv = [
        *("--work-dir", str(work), "--output-dir", str(output), "--episodes", "1"),
        *("--image-size", str(IMAGE_SIZE), "--eval-episodes", "1", "--eval-max-steps", "4"),
        *TINY_TRAINING,
    ]
    main(argv)

    rows = json.loads((output / "summary.json").read_text())
    assert [(r["policy"], r["mode"], r["delay"]) for r in rows] == SETTINGS
    for row in rows:
        assert {"episodes", "successes", "discontinuity_mean", "image_size"} <= row.keys()
        assert (row["episodes"], row["image_size"], row["train_steps"]) == (1, IMAGE_SIZE, 2)
        assert 0 <= row["ci95_low"] <= row["success_rate"] <= row["ci95_high"] <= 1
    shared = {key: value for key, value in rows[2].items() if key not in ("mode", "same_episodes_as")}
    assert shared == {key: value for key, value in rows[4].items() if key != "mode"}
    assert rows[2]["same_episodes_as"] == "prefix, delay 0"
    assert "| act | discard | 1 |" in (output / "summary.md").read_text()
    pytest.importorskip("matplotlib")
    assert (output / "summary.png").stat().st_size > 0

    # The sweep reads the action space from lerobot-train's train_config.json and refuses another one.
    checkpoint = work / "train" / POLICY_TYPES[1] / "checkpoints" / "last" / "pretrained_model"
    with pytest.raises(ValueError, match="pass --actions position"):
        delay_sweep.main([str(checkpoint), "--actions", "delta"])

    # Resumed: the dataset, both checkpoints and every evaluated setting are reused.
    saved = {path: path.stat().st_mtime_ns for path in (work / "eval").rglob("*.json")}
    assert len(saved) == len(SETTINGS) - 1
    capsys.readouterr()
    main(argv)
    printed = capsys.readouterr().out
    assert "Reusing the dataset" in printed
    assert all(f"Reusing the {policy_type} checkpoint" in printed for policy_type in POLICY_TYPES)
    assert {path: path.stat().st_mtime_ns for path in saved} == saved
    assert json.loads((output / "summary.json").read_text()) == rows
