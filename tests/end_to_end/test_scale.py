"""Scale: validation in eval mode, bfloat16 autocast, and multi-process training with accelerate."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_POLICY_CLI_ARGS, make_batch, make_policy

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy


@pytest.mark.parametrize("rtc_prefix_attention", ["full", "shared_observation"])
def test_validation_loss_in_eval_mode_with_the_vae(rtc_prefix_attention):
    """LeRobot 0.6's `--eval_steps` calls `forward` in eval mode, where the VAE gives no distribution."""
    policy = make_policy(use_vae=True, rtc_prefix_attention=rtc_prefix_attention)
    policy.eval()
    with torch.no_grad():
        loss, loss_dict = policy.forward(make_batch(policy.config))
    assert torch.isfinite(loss)
    assert "kld_loss" not in loss_dict


@pytest.mark.parametrize("rtc_prefix_attention", ["full", "shared_observation"])
def test_bfloat16_autocast_step_gives_finite_loss_and_gradients(rtc_prefix_attention):
    policy = make_policy(use_vae=True, rtc_prefix_attention=rtc_prefix_attention)
    policy.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = policy.forward(make_batch(policy.config))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


@pytest.mark.slow
def test_lerobot_train_under_accelerate_with_two_processes(synthetic_dataset, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    meta = synthetic_dataset.meta
    output_dir = tmp_path / "ddp"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_LEROBOT_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        str(accelerate),
        "launch",
        "--num_processes=2",
        "--cpu",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "-m",
        "lerobot.scripts.lerobot_train",
        f"--dataset.repo_id={meta.repo_id}",
        f"--dataset.root={meta.root}",
        *TINY_POLICY_CLI_ARGS,
        "--policy.rtc_train_all_delays=true",
        "--policy.use_vae=true",
        "--batch_size=2",
        "--steps=3",
        "--save_freq=3",
        "--num_workers=0",
        "--wandb.enable=false",
        f"--output_dir={output_dir}",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "End of training" in result.stdout + result.stderr

    checkpoint = output_dir / "checkpoints" / "last" / "pretrained_model"
    policy = ACTRelativeRTCAllDelaysPolicy.from_pretrained(checkpoint)
    assert policy.config.rtc_train_all_delays and torch.isfinite(policy.relative_action_normalizer.std).all()
