"""Shared fixtures: tiny configurations, synthetic batches and a small local LeRobot dataset."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_IMAGES, OBS_STATE

from lerobot_policy_act_rtc_alldelays import ACTRelativeRTCAllDelaysConfig, ACTRelativeRTCAllDelaysPolicy
from lerobot_policy_act_rtc_alldelays.tools.policy_sizes import TINY, cli_args

STATE_DIM = 4
IMAGE_SIZE = 64
STATE_KEY = OBS_STATE
IMAGE_KEY = f"{OBS_IMAGES}.wrist"

# The tiny policy: `policy_sizes.TINY` with three delays, deterministic in training (no dropout, no hidden
# prefixes) so that losses can be compared exactly, in prefix mode. Tests build it with `tiny_config`, and
# the end-to-end tests pass the same fields to the real lerobot-train CLI.
TINY_RTC = {
    **TINY,
    "rtc_max_delay": 3,
    "dropout": 0.0,
    "rtc_prefix_dropout": 0.0,
    "rtc_inference_mode": "prefix",  # the mode whose behaviour most tests specify; discard is set explicitly
    "push_to_hub": False,
}
TINY_POLICY_CLI_ARGS = [
    "--policy.type=act_relative_rtc_alldelays",
    "--policy.device=cpu",
    f"--policy.downscale_img_square={IMAGE_SIZE}",
    *cli_args(TINY_RTC),
]


def tiny_config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    """The tiny policy on a 4-dim state and one 64 px camera, without the VAE unless overridden."""
    fields = dict(
        device="cpu",
        input_features={
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(STATE_DIM,))},
        use_vae=False,
        **TINY_RTC,
    )
    fields.update(overrides)
    return ACTRelativeRTCAllDelaysConfig(**fields)


def tiny_dataset_config(**overrides) -> ACTRelativeRTCAllDelaysConfig:
    """The tiny policy without features: `make_policy(cfg, ds_meta=...)` takes them from the dataset."""
    return ACTRelativeRTCAllDelaysConfig(**{"device": "cpu", "use_vae": False, **TINY_RTC, **overrides})


def set_unit_stats(policy) -> None:
    """Dataset statistics that make the relative-action normalizer the identity on `action - state`, and
    the state token's normalizer the identity on the state."""
    if policy.config.predict_relative_actions:
        dim = policy.config.action_feature.shape[0]
        policy.relative_action_normalizer.set_stats(torch.zeros(dim), torch.ones(dim))
    if hasattr(policy, "state_normalizer"):
        dim = policy.config.robot_state_feature.shape[0]
        policy.state_normalizer.set_stats(torch.zeros(dim), torch.ones(dim))


def make_policy(policy_class=ACTRelativeRTCAllDelaysPolicy, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    policy = policy_class(tiny_config(**overrides))
    set_unit_stats(policy)
    return policy


def make_batch(config, batch_size: int = 3, seed: int = 0, pad_tail: int = 2) -> dict[str, torch.Tensor]:
    """A training batch as the preprocessor delivers it: images, raw state, an action window and its
    padding mask (the last `pad_tail` actions of the last sample are padding)."""
    generator = torch.Generator().manual_seed(seed)
    window = len(config.action_delta_indices)  # with relative_anchor=last_action, the anchor first
    dim = config.action_feature.shape[0]
    is_pad = torch.zeros(batch_size, window, dtype=torch.bool)
    if pad_tail:
        is_pad[-1, -pad_tail:] = True
    batch = {
        OBS_STATE: torch.randn(batch_size, dim, generator=generator),
        ACTION: torch.randn(batch_size, window, dim, generator=generator),
        f"{ACTION}_is_pad": is_pad,
    }
    for key, feature in config.image_features.items():
        batch[key] = torch.rand(batch_size, *feature.shape, generator=generator)
    if config.env_state_feature:
        batch[OBS_ENV_STATE] = torch.randn(
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
