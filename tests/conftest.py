"""Shared fixtures: tiny configurations, synthetic batches and a small local LeRobot dataset."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, ACTRelativeRTCAllDelaysPolicy

STATE_DIM = 4
IMAGE_SIZE = 64


# The same tiny policy for the real lerobot-train CLI: ResNet18 from scratch on 32 px, dim 32, one layer each.
TINY_POLICY_CLI_ARGS = [
    "--policy.type=act_relative_rtc_alldelays",
    "--policy.device=cpu",
    "--policy.pretrained_backbone_weights=null",
    "--policy.push_to_hub=false",
    "--policy.chunk_size=5",
    "--policy.n_action_steps=5",
    "--policy.rtc_max_delay=2",
    "--policy.dim_model=32",
    "--policy.n_heads=4",
    "--policy.dim_feedforward=64",
    "--policy.n_encoder_layers=1",
    "--policy.n_decoder_layers=1",
    "--policy.n_vae_encoder_layers=1",
    "--policy.downscale_img_square=32",
]


def tiny_config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    """A model small enough for CPU tests: ResNet18 on 64 px, dim 32, one layer each."""
    fields = dict(
        device="cpu",
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            "observation.images.wrist": PolicyFeature(
                type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)
            ),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(STATE_DIM,))},
        pretrained_backbone_weights=None,
        chunk_size=5,
        n_action_steps=5,
        rtc_max_delay=3,
        dim_model=32,
        n_heads=4,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        n_vae_encoder_layers=1,
        latent_dim=8,
        use_vae=False,
        dropout=0.0,
        push_to_hub=False,
    )
    fields.update(overrides)
    return ACTRelativeRTCAllDelaysConfig(**fields)


def set_unit_stats(policy) -> None:
    """Relative-action statistics that make the normalizer the identity on `action - state`."""
    if policy.config.use_relative_actions:
        dim = policy.config.action_feature.shape[0]
        policy.relative_action_normalizer.set_stats(torch.zeros(dim), torch.ones(dim))


def make_policy(policy_class=ACTRelativeRTCAllDelaysPolicy, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    policy = policy_class(tiny_config(**overrides))
    set_unit_stats(policy)
    return policy


def make_batch(config, batch_size: int = 3, seed: int = 0, pad_tail: int = 2) -> dict[str, torch.Tensor]:
    """A training batch as the preprocessor delivers it: images, raw state, an action window and its
    padding mask (the last `pad_tail` actions of the last sample are padding)."""
    generator = torch.Generator().manual_seed(seed)
    window = config.action_window_size
    dim = config.action_feature.shape[0]
    is_pad = torch.zeros(batch_size, window, dtype=torch.bool)
    if pad_tail:
        is_pad[-1, -pad_tail:] = True
    batch = {
        "observation.state": torch.randn(batch_size, dim, generator=generator),
        "action": torch.randn(batch_size, window, dim, generator=generator),
        "action_is_pad": is_pad,
    }
    for key, feature in config.image_features.items():
        batch[key] = torch.rand(batch_size, *feature.shape, generator=generator)
    if config.env_state_feature:
        batch["observation.environment_state"] = torch.randn(
            batch_size, config.env_state_feature.shape[0], generator=generator
        )
    return batch


@pytest.fixture
def policy():
    return make_policy()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """4 episodes of 20 frames, 6-dim state and action, one 48x64 camera stored as images."""
    from lerobot_policy_act_rtc_alldelays.tools.synthetic_dataset import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("datasets") / "synthetic", n_episodes=4, episode_length=20
    )
