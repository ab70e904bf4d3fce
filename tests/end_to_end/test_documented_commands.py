"""What the README tells users to run runs: each `configs/*.json` as `lerobot-train --config_path=...` reads
it, and the README's `lerobot-eval` command on a saved checkpoint, offline."""

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from typing import Any

import draccus
import pytest
import torch
from conftest import tiny_config
from lerobot.configs import parser
from lerobot.configs.train import TrainPipelineConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.import_utils import register_third_party_plugins
from test_docs import README, ROOT, prose_lines

from lerobot_policy_act_rtc_alldelays import (
    ACTRelativeRTCAllDelaysConfig,
    ACTRelativeRTCAllDelaysPolicy,
    make_act_relative_rtc_alldelays_pre_post_processors,
)

CONFIGS = sorted((ROOT / "configs").glob("*.json"))
CODE_SPAN = re.compile(r"`([^`]+)`")
EVAL_STEPS = 4  # control steps per evaluated episode: each renders a 480 px MetaWorld frame

# Runs a console script of the installed distributions (argv: steps per episode, the script's name, its
# arguments) with every MetaWorld episode cut at that many steps: LeRobot's MetaWorld env ignores
# `--env.episode_length` and always runs 500 steps, and `rollout` reads its private `_max_episode_steps`.
SHORT_EPISODES = textwrap.dedent(
    """
    import sys
    from importlib.metadata import entry_points

    from lerobot.envs.metaworld import MetaworldEnv

    steps, sys.argv = int(sys.argv[1]), sys.argv[2:]
    init = MetaworldEnv.__init__

    def init_with_short_episodes(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._max_episode_steps = steps

    MetaworldEnv.__init__ = init_with_short_episodes
    (script,) = entry_points(group="console_scripts", name=sys.argv[0])
    script.load()()
    """
)


@parser.wrap()
def parse_train_config(cfg: TrainPipelineConfig) -> TrainPipelineConfig:
    """What lerobot-train's `train` does with its command line before it loads the dataset: LeRobot's own
    parser (plugins, `--config_path`, draccus), then the config's validation."""
    cfg.validate()
    return cfg


def values_that_differ(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every value of the json `expected` that the encoded config `actual` does not hold, by its path."""
    if not isinstance(expected, dict):
        return [] if expected == actual else [f"{path}: {expected!r} in the json, {actual!r} parsed"]
    if not isinstance(actual, dict):
        return [f"{path}: {expected!r} in the json, {actual!r} parsed"]
    return [
        difference
        for key, value in expected.items()
        for difference in values_that_differ(value, actual.get(key), f"{path}.{key}".lstrip("."))
    ]


def readme_code_spans(prefix: str) -> list[str]:
    """The README's inline code outside code blocks that starts with `prefix`."""
    spans = [span for line in prose_lines(README) for span in CODE_SPAN.findall(line)]
    return [span for span in spans if span.startswith(prefix)]


@pytest.mark.parametrize("config_path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_each_config_parses_as_lerobot_train_reads_it_into_this_policy_with_its_values(
    config_path, tmp_path, monkeypatch
):
    written = json.loads(config_path.read_text())
    monkeypatch.chdir(tmp_path)  # validate() refuses an existing output_dir, relative to the working dir
    monkeypatch.setattr(sys, "argv", ["lerobot-train", f"--config_path={config_path}"])
    register_third_party_plugins()  # as lerobot-train's main does first

    parsed = parse_train_config()

    assert type(parsed.policy) is ACTRelativeRTCAllDelaysConfig
    # LeRobot swaps a device this machine lacks for one it has (the SO-101 run's cuda on a CPU machine).
    differences = values_that_differ(written, draccus.encode(parsed))
    assert [d for d in differences if not d.startswith("policy.device:")] == []


@pytest.mark.slow
def test_the_readmes_lerobot_eval_command_evaluates_a_saved_checkpoint(tmp_path):
    pytest.importorskip("metaworld")  # the `metaworld` extra: the simulator the command runs in here
    from lerobot_policy_act_rtc_alldelays.tools.metaworld.demos import DEFAULT_TASK, IMAGE_KEY, STATE_KEY

    (command,) = readme_code_spans("lerobot-eval ")
    (delay_option,) = readme_code_spans("--policy.rtc_inference_delay=")
    # An untrained tiny policy for MetaWorld's inputs, saved where `lerobot-train --output_dir=outputs/<run>`
    # saves its last checkpoint, with the shipped inference mode and room in the chunk for the delay.
    config = tiny_config(
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)),
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(4,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
        predict_relative_actions=False,  # MetaWorld's actions are end-effector deltas
        downscale_img_square=32,
        n_action_steps=3,
        rtc_inference_mode=ACTRelativeRTCAllDelaysConfig.rtc_inference_mode,
    )
    torch.manual_seed(0)
    stats = {
        IMAGE_KEY: {"mean": torch.zeros(3, 1, 1), "std": torch.ones(3, 1, 1)},
        STATE_KEY: {"mean": torch.zeros(4), "std": torch.ones(4)},
        "action": {"mean": torch.zeros(4), "std": torch.ones(4)},
    }
    checkpoint = tmp_path / "outputs" / "tiny" / "checkpoints" / "last" / "pretrained_model"
    for component in (
        ACTRelativeRTCAllDelaysPolicy(config),
        *make_act_relative_rtc_alldelays_pre_post_processors(config, dataset_stats=stats),
    ):
        component.save_pretrained(checkpoint)

    # The README leaves the environment to the reader (`...`): here MetaWorld, one short episode.
    environment = [
        "--env.type=metaworld",
        f"--env.task={DEFAULT_TASK}",
        "--eval.n_episodes=1",
        "--eval.batch_size=1",
        "--output_dir=eval",
    ]
    words = shlex.split(command.replace("<run>", "tiny"))
    arguments = [*(arg for word in words for arg in (environment if word == "..." else [word])), delay_option]
    assert not [word for word in arguments if "<" in word], f"a placeholder left unfilled: {arguments}"
    result = subprocess.run(
        [sys.executable, "-c", SHORT_EPISODES, str(EVAL_STEPS), *arguments],
        cwd=tmp_path,
        env={
            "MUJOCO_GL": "egl",
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 1
    assert [task["task_group"] for task in info["per_task"]] == [DEFAULT_TASK]
