"""The everyday workflows through the real lerobot-train CLI: train, resume, fine-tune on another dataset
with `--policy.path`, and evaluate the result; a refused configuration says why on the command line."""

import os
import subprocess

import pytest
import torch
from conftest import TINY_POLICY_CLI_ARGS
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from safetensors.torch import load_file
from test_train_cli import LEROBOT_TRAIN, run_lerobot_train

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.relative_actions import (
    compute_relative_action_stats,
    read_state_and_action_columns,
)
from lerobot_policy_act_rtc_alldelays.tools.synthetic_dataset import make_synthetic_dataset

pytestmark = pytest.mark.slow

DATASET_DERIVED = ("relative_action_normalizer.mean", "relative_action_normalizer.std", "action_loss_weight")
COMMON_ARGS = ["--batch_size=4", "--num_workers=0", "--wandb.enable=false"]


def test_train_resume_fine_tune_on_another_dataset_then_evaluate(synthetic_dataset, tmp_path):
    meta = synthetic_dataset.meta
    run = tmp_path / "run"
    run_lerobot_train(
        [
            f"--dataset.repo_id={meta.repo_id}",
            f"--dataset.root={meta.root}",
            *TINY_POLICY_CLI_ARGS,
            '--policy.action_loss_weights={"joint_5.pos": 3.0}',
            *COMMON_ARGS,
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={run}",
        ],
        tmp_path,
    )
    first = load_file(run / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors")

    # Resume: LeRobot 0.6 used to add its own relative-action processor steps here and crash.
    resumed = run_lerobot_train(
        [
            "--resume=true",
            f"--config_path={run / 'checkpoints' / 'last' / 'pretrained_model' / 'train_config.json'}",
            "--steps=4",
        ],
        tmp_path,
    )
    assert "Resuming or continuing on the same data" in resumed.stdout + resumed.stderr
    second = load_file(run / "checkpoints" / "000004" / "pretrained_model" / "model.safetensors")
    for name in (*DATASET_DERIVED, "stats_fingerprint"):
        assert torch.equal(second[name], first[name]), name
    assert not torch.equal(second["model.action_head.weight"], first["model.action_head.weight"])

    # Fine-tune on another dataset with other loss weights.
    other = make_synthetic_dataset(
        tmp_path / "other", n_episodes=2, episode_length=16, seed=3, repo_id="local/other_arm"
    )
    tuned_run = tmp_path / "tuned"
    tuned = run_lerobot_train(
        [
            f"--policy.path={run / 'checkpoints' / 'last' / 'pretrained_model'}",
            f"--dataset.repo_id={other.meta.repo_id}",
            f"--dataset.root={other.meta.root}",
            '--policy.action_loss_weights={"joint_1.pos": 2.0}',
            *COMMON_ARGS,
            "--steps=1",
            "--save_freq=1",
            f"--output_dir={tuned_run}",
        ],
        tmp_path,
    )
    assert "Fine-tuning on other data" in tuned.stdout + tuned.stderr
    checkpoint = tuned_run / "checkpoints" / "last" / "pretrained_model"
    weights = load_file(checkpoint / "model.safetensors")
    config = PreTrainedConfig.from_pretrained(checkpoint)
    mean, std = compute_relative_action_stats(
        *read_state_and_action_columns(other.meta.root, "observation.state", "action"),
        config.action_delta_indices,
    )
    assert torch.equal(weights["relative_action_normalizer.mean"], mean)
    assert torch.equal(weights["relative_action_normalizer.std"], std)
    # draccus merges the command line's dict into the checkpoint's: the weights applied are those recorded.
    assert config.action_loss_weights == {"joint_5.pos": 3.0, "joint_1.pos": 2.0}
    assert weights["action_loss_weight"].tolist() == [1.0, 2.0, 1.0, 1.0, 1.0, 3.0]

    # Evaluate: the fine-tuned checkpoint predicts on the new dataset's frames.
    policy = ACTRelativeRTCAllDelaysPolicy.from_pretrained(checkpoint)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    frame = other[3]
    observation = pre({k: v for k, v in frame.items() if k.startswith("observation.")})
    chunk = post(policy.predict_action_chunk(observation))
    assert chunk.shape == (1, config.chunk_size, 6) and torch.isfinite(chunk).all()


def test_lerobot_train_shows_why_it_refuses_a_configuration(tmp_path):
    """LeRobot 0.6's draccus drops the message of an error raised while building the config."""
    result = subprocess.run(
        [
            LEROBOT_TRAIN,
            "--policy.type=act_relative_rtc_alldelays",
            "--policy.rtc_delay_loss_weights=[nan,1,1,1]",
            "--dataset.repo_id=local/unused",
            f"--output_dir={tmp_path / 'run'}",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "`rtc_delay_loss_weights` must be finite numbers" in result.stdout + result.stderr
