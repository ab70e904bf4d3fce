"""End to end and offline: the real lerobot-train CLI, a checkpoint, and loading it back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, TINY_POLICY_CLI_ARGS, TINY_RTC
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from safetensors.torch import load_file

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.relative_actions import (
    compute_relative_action_stats,
    last_action_origins,
    read_state_and_action_columns,
)
from lerobot_policy_act_rtc_alldelays.tools.synthetic_dataset import make_synthetic_dataset

pytestmark = pytest.mark.slow

LEROBOT_TRAIN = str(Path(sys.executable).parent / "lerobot-train")


def run_lerobot_train(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(home / "lerobot_home")}
    result = subprocess.run([LEROBOT_TRAIN, *args], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def trained_checkpoint(synthetic_dataset, tmp_path_factory):
    """A few steps of lerobot-train on the synthetic dataset; returns the pretrained_model folder."""
    out = tmp_path_factory.mktemp("train")
    meta = synthetic_dataset.meta
    run_lerobot_train(
        [
            f"--dataset.repo_id={meta.repo_id}",
            f"--dataset.root={meta.root}",
            *TINY_POLICY_CLI_ARGS,
            "--batch_size=4",
            "--steps=3",
            "--save_freq=3",
            "--num_workers=0",
            "--wandb.enable=false",
            f"--output_dir={out / 'run'}",
        ],
        out,
    )
    return out / "run" / "checkpoints" / "last" / "pretrained_model"


def test_checkpoint_holds_config_weights_stats_and_both_processors(trained_checkpoint):
    names = {p.name for p in trained_checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
    } <= names
    config = json.loads((trained_checkpoint / "config.json").read_text())
    assert (config["type"], config["chunk_size"], config["rtc_max_delay"]) == (
        "act_relative_rtc_alldelays",
        TINY_RTC["chunk_size"],
        TINY_RTC["rtc_max_delay"],
    )
    weights = load_file(trained_checkpoint / "model.safetensors")
    assert {
        "relative_action_normalizer.mean",
        "relative_action_normalizer.std",
        "stats_fingerprint",
        "trained_prefix_attention",
    } <= set(weights)


def test_training_computed_the_relative_stats_of_the_dataset(trained_checkpoint, synthetic_dataset):
    weights = load_file(trained_checkpoint / "model.safetensors")
    meta = synthetic_dataset.meta
    mean, std = compute_relative_action_stats(
        *read_state_and_action_columns(meta.root, "observation.state", "action"),
        PreTrainedConfig.from_pretrained(trained_checkpoint).action_delta_indices,
    )
    assert torch.allclose(weights["relative_action_normalizer.mean"], mean)
    assert torch.allclose(weights["relative_action_normalizer.std"], std)


def test_lerobot_train_anchors_relative_actions_on_the_last_action_when_asked(synthetic_dataset, tmp_path):
    meta = synthetic_dataset.meta
    run_lerobot_train(
        [
            f"--dataset.repo_id={meta.repo_id}",
            f"--dataset.root={meta.root}",
            *TINY_POLICY_CLI_ARGS,
            "--policy.relative_anchor=last_action",
            *("--batch_size=4", "--steps=2", "--save_freq=2", "--num_workers=0", "--wandb.enable=false"),
            f"--output_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    checkpoint = tmp_path / "run" / "checkpoints" / "last" / "pretrained_model"
    config = PreTrainedConfig.from_pretrained(checkpoint)
    assert config.relative_anchor == "last_action" and config.action_delta_indices[0] == -1
    episode, state, action = read_state_and_action_columns(meta.root, "observation.state", "action")
    origin = last_action_origins(episode, state, action, anchor_offset=-1)
    mean, std = compute_relative_action_stats(episode, origin, action, config.action_delta_indices[1:])
    weights = load_file(checkpoint / "model.safetensors")
    assert torch.allclose(weights["relative_action_normalizer.mean"], mean)
    assert torch.allclose(weights["relative_action_normalizer.std"], std)


def test_from_pretrained_restores_the_trained_policy_and_predicts_identically(
    trained_checkpoint, synthetic_dataset
):
    loaded = ACTRelativeRTCAllDelaysPolicy.from_pretrained(trained_checkpoint)
    assert loaded.config.chunk_size == TINY_RTC["chunk_size"]
    assert loaded.config.downscale_img_square == IMAGE_SIZE
    # The trained policy, rebuilt from its saved config and weights with every key required.
    config = PreTrainedConfig.from_pretrained(trained_checkpoint)
    trained = ACTRelativeRTCAllDelaysPolicy(config)
    trained.load_state_dict(load_file(trained_checkpoint / "model.safetensors"), strict=True)
    trained.eval()

    pre, post = make_pre_post_processors(loaded.config, pretrained_path=str(trained_checkpoint))
    frame = synthetic_dataset[5]
    observation = pre({k: v for k, v in frame.items() if k.startswith("observation.")})
    assert observation["observation.images.wrist"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    chunk = loaded.predict_action_chunk(observation)
    assert torch.equal(chunk, trained.predict_action_chunk(observation))
    action = post(loaded.select_action(observation))
    assert action.shape == (1, 6) and torch.isfinite(action).all()


def test_design_note_command_trains_and_saves(tmp_path):
    """The design note's lerobot-train command, with only the policy type and the offline necessities
    changed: a local dataset with its features (480x640 wrist camera, 6-dim state and action), no
    pretrained weights, CPU, two steps."""
    root = tmp_path / "so101_local"
    make_synthetic_dataset(
        root,
        n_episodes=2,
        episode_length=12,
        image_height=480,
        image_width=640,
        repo_id="giacomoran/so101_data_collection_cube_hand_guided_1x224x8",
    )
    output_dir = tmp_path / "outputs" / "cube_hand_guided_act_wrist_20_overfit"
    run_lerobot_train(
        [
            "--policy.type=act_relative_rtc_alldelays",
            "--dataset.repo_id=giacomoran/so101_data_collection_cube_hand_guided_1x224x8",
            f"--dataset.root={root}",
            "--dataset.episodes=[0]",
            "--policy.repo_id=giacomoran/so101_data_collection_cube_hand_guided_act_wrist_20_overfit",
            f"--output_dir={output_dir}",
            '--policy.input_features={"observation.state": {"shape": [6], "type": "STATE"}, '
            '"observation.images.wrist": {"shape": [3, 480, 640], "type": "VISUAL"}}',
            "--steps=2",
            "--save_freq=10000",
            "--batch_size=32",
            "--policy.optimizer_lr=3e-5",
            "--policy.optimizer_lr_backbone=3e-5",
            "--policy.chunk_size=8",
            "--policy.n_action_steps=8",
            "--policy.use_vae=false",
            "--policy.n_decoder_layers=4",
            "--policy.downscale_img_square=224",
            "--policy.vision_backbone=resnet34",
            "--policy.pretrained_backbone_weights=null",
            "--policy.pre_norm=true",
            "--policy.rtc_max_delay=3",
            "--policy.device=cpu",
            "--wandb.enable=false",
            "--wandb.disable_artifact=false",
            "--policy.push_to_hub=false",
            "--num_workers=0",
        ],
        tmp_path,
    )
    saved = output_dir / "checkpoints" / "last" / "pretrained_model"
    assert (saved / "model.safetensors").exists()
    assert json.loads((saved / "config.json").read_text())["vision_backbone"] == "resnet34"
