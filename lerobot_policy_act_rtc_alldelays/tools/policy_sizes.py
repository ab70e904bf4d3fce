"""Policy sizes shared by the tools and the tests, so that "the tiny policy" means one thing everywhere.

Each size is a dict of config fields that applies to this policy and to LeRobot's ACT alike (the tools
compare the two at equal sizes). `cli_args` turns one into `lerobot-train` arguments.
"""

from typing import Any

# Test size: one layer each, dim 32, trains a step in well under a second on CPU.
TINY: dict[str, Any] = dict(
    pretrained_backbone_weights=None,
    chunk_size=5,
    n_action_steps=5,
    dim_model=32,
    n_heads=4,
    dim_feedforward=64,
    n_encoder_layers=1,
    n_decoder_layers=1,
    n_vae_encoder_layers=1,
    latent_dim=8,
)

# CPU study size: a ResNet18 from scratch (offline) and a small transformer; trains on a few thousand
# frames in minutes on two cores.
SMALL: dict[str, Any] = dict(
    vision_backbone="resnet18",
    pretrained_backbone_weights=None,
    use_vae=False,
    dim_model=128,
    n_heads=4,
    dim_feedforward=512,
    n_encoder_layers=2,
    n_decoder_layers=1,
)

# The evidence study's size, shared by every variant: a state-only transformer small enough that a training
# takes seconds to minutes on one CPU core. No VAE: at inference ACT's VAE only feeds a zero latent, and its
# encoder would run once per delay in the all-delays variants, whose step already costs ~D times more there.
STATE_STUDY: dict[str, Any] = dict(
    pretrained_backbone_weights=None,
    dim_model=64,
    n_heads=4,
    dim_feedforward=128,
    n_encoder_layers=1,
    n_decoder_layers=1,
    use_vae=False,
    dropout=0.1,
)

# The design note's size (the SO-101 configuration): ResNet34 at 224 px, chunk 8, 4 + 4 pre-norm layers.
DESIGN_NOTE: dict[str, Any] = dict(
    vision_backbone="resnet34",
    pretrained_backbone_weights=None,
    use_vae=False,
    pre_norm=True,
    chunk_size=8,
    n_action_steps=8,
    dim_model=512,
    n_heads=8,
    dim_feedforward=3200,
    n_encoder_layers=4,
    n_decoder_layers=4,
)


def cli_value(value: Any) -> str:
    """A config value as draccus parses it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def cli_args(fields: dict[str, Any], prefix: str = "--policy.") -> list[str]:
    """`{"dim_model": 32}` -> `["--policy.dim_model=32"]`."""
    return [f"{prefix}{name}={cli_value(value)}" for name, value in fields.items()]
