"""Training-step benchmark: all-delays on vs all-delays off vs LeRobot's ACT at the same sizes.

Times optimizer-free forward+backward steps, interleaved across the variants so that machine drift hits
them alike, splits the forward pass into backbone, encoder, decoder and the rest, and measures the peak
memory of a step. Prints markdown tables and writes every figure to JSON.

    act-rtc-alldelays-benchmark                  # design-note configuration on a GPU, a small one on CPU
    act-rtc-alldelays-benchmark --sweep          # vary delay, batch, backbone and image size one at a time
"""

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from torch import Tensor, nn

from .configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from .modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy

ON, OFF, ACT = "all_delays_on", "all_delays_off", "lerobot_act"
STAGES = ("backbone", "encoder", "decoder")
IMAGE_KEY = "observation.images.cam"
STATE_DIM = 6
N_HEADS = 8
MB = 2**20
MEMORY_MEANING = {
    "cuda": "CUDA allocator peak during one step minus what was allocated before it (weights, batch).",
    "cpu": "Peak RSS of a fresh process over two steps minus its RSS just before them (Linux only).",
}


@dataclass(frozen=True)
class Settings:
    backbone: str
    image_size: int
    batch_size: int
    chunk_size: int
    rtc_max_delay: int
    dim_model: int
    dim_feedforward: int
    n_layers: int
    warmup: int
    steps: int


# The design note's configuration, and a small one that finishes in about two minutes on two CPU cores.
DEFAULTS = {
    "cuda": Settings("resnet34", 224, 32, 8, 3, 512, 3200, 4, warmup=5, steps=30),
    "cpu": Settings("resnet18", 96, 8, 8, 3, 256, 1024, 4, warmup=2, steps=6),
}
SWEEP = {"rtc_max_delay": (1, 3, 7), "batch_size": (8, 32), "backbone": ("resnet18", "resnet34"),
         "image_size": (96, 224)}  # fmt: skip


@dataclass
class Variant:
    name: str
    policy: nn.Module
    batch: dict[str, Tensor]
    targets_per_step: int  # supervised action chunks' steps: B * D * chunk with all delays, else B * chunk


def build_variant(name: str, settings: Settings, device: torch.device) -> Variant:
    """A freshly initialised policy in training mode and a random batch shaped as its preprocessor outputs."""
    torch.manual_seed(0)
    s = settings
    shared = dict(
        device=device.type,
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, s.image_size, s.image_size)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(STATE_DIM,))},
        vision_backbone=s.backbone,
        pretrained_backbone_weights=None,
        chunk_size=s.chunk_size,
        n_action_steps=s.chunk_size,
        dim_model=s.dim_model,
        n_heads=N_HEADS,
        dim_feedforward=s.dim_feedforward,
        n_encoder_layers=s.n_layers,
        n_decoder_layers=s.n_layers,
        pre_norm=True,
        use_vae=False,
        push_to_hub=False,
    )
    if name == ACT:
        policy = ACTPolicy(ACTConfig(**shared))
        window, targets = s.chunk_size, s.batch_size * s.chunk_size
    else:
        config = ACTRelativeRTCAllDelaysConfig(
            rtc_max_delay=s.rtc_max_delay, rtc_train_all_delays=name == ON, **shared
        )
        policy = ACTRelativeRTCAllDelaysPolicy(config)
        policy.relative_action_normalizer.set_stats(torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
        window = config.action_window_size
        targets = s.batch_size * s.chunk_size * (config.n_delays if name == ON else 1)
    batch = {
        IMAGE_KEY: torch.rand(s.batch_size, 3, s.image_size, s.image_size),
        "observation.state": torch.randn(s.batch_size, STATE_DIM),
        "action": torch.randn(s.batch_size, window, STATE_DIM),
        "action_is_pad": torch.zeros(s.batch_size, window, dtype=torch.bool),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    return Variant(name, policy.to(device).train(), batch, targets)


def train_step(variant: Variant) -> None:
    variant.policy.zero_grad(set_to_none=True)
    loss, _ = variant.policy.forward(variant.batch)
    loss.backward()


class Clock:
    """Timestamps cheap enough to take inside a step, read after it. On a GPU they are CUDA events, because
    the host runs ahead of the kernels; on CPU an op has finished when it returns, so perf_counter is exact."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> "torch.cuda.Event | float":
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


