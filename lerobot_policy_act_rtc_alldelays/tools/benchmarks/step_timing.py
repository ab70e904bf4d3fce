"""The training step that both benchmarks time (`benchmark`, and `benchmark_delays` for K delays per
sample): the variants and their sizes, a freshly built policy with a random batch, and the forward+backward
step timed per stage, interleaved across the variants.
"""

import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from torch import Tensor, nn

from ...configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from ...modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from ..interleave import rotated
from ..policy_sizes import DESIGN_NOTE
from ..synthetic_dataset import IMAGE_KEY

ON, SHARED, OFF, ACT = "all_delays_on", "all_delays_shared_obs", "all_delays_off", "lerobot_act"
# The config fields that make each variant of this policy: all delays by batch expansion, all delays by
# shared-observation packing, and one random delay per sample (the base policy's training).
RTC_FIELDS: dict[str, dict[str, Any]] = {
    ON: dict(rtc_train_all_delays=True, rtc_prefix_attention="full"),
    SHARED: dict(rtc_train_all_delays=True, rtc_prefix_attention="shared_observation"),
    OFF: dict(rtc_train_all_delays=False, rtc_prefix_attention="full"),
}
STAGES = ("backbone", "encoder", "decoder")
STATE_DIM = 6
N_HEADS = DESIGN_NOTE["n_heads"]


@dataclass(frozen=True)
class Settings:
    backbone: str
    image_size: int  # 0: no camera, a state-only policy
    batch_size: int
    chunk_size: int
    rtc_max_delay: int
    dim_model: int
    dim_feedforward: int
    n_layers: int  # encoder and decoder alike
    warmup: int
    steps: int
    n_heads: int = N_HEADS
    state_dim: int = STATE_DIM  # of the robot state and of the action
    env_state_dim: int = 0  # > 0: an environment-state input of this size
    pre_norm: bool = True
    predict_relative_actions: bool = True


@dataclass
class Variant:
    name: str
    policy: nn.Module
    batch: dict[str, Tensor]
    targets_per_step: int  # supervised actions: B * K * chunk with K delays per sample, else B * chunk


def build_variant(
    name: str, settings: Settings, device: torch.device, rtc_fields: dict[str, Any] | None = None
) -> Variant:
    """A freshly initialised policy in training mode and a random batch shaped as its preprocessor outputs
    (states and actions MEAN_STD-normalized). `rtc_fields`: the config fields of this policy's variant, by
    default those of the named one; ValueError where the config refuses them at this size."""
    torch.manual_seed(0)
    s = settings
    inputs = {OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(s.state_dim,))}
    if s.env_state_dim:
        inputs[OBS_ENV_STATE] = PolicyFeature(type=FeatureType.ENV, shape=(s.env_state_dim,))
    if s.image_size:
        inputs[IMAGE_KEY] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, s.image_size, s.image_size))
    shared = dict(
        device=device.type,
        input_features=inputs,
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(s.state_dim,))},
        vision_backbone=s.backbone,
        pretrained_backbone_weights=None,
        chunk_size=s.chunk_size,
        n_action_steps=s.chunk_size,
        dim_model=s.dim_model,
        n_heads=s.n_heads,
        dim_feedforward=s.dim_feedforward,
        n_encoder_layers=s.n_layers,
        n_decoder_layers=s.n_layers,
        pre_norm=s.pre_norm,
        use_vae=False,
        push_to_hub=False,
    )
    if name == ACT:
        policy = ACTPolicy(ACTConfig(**shared))
        window, targets = s.chunk_size, s.batch_size * s.chunk_size
    else:
        config = ACTRelativeRTCAllDelaysConfig(
            rtc_max_delay=s.rtc_max_delay,
            predict_relative_actions=s.predict_relative_actions,
            **(RTC_FIELDS[name] if rtc_fields is None else rtc_fields),
            **shared,
        )
        policy = ACTRelativeRTCAllDelaysPolicy(config)
        # Identity statistics: the timing does not depend on their values, only on their being set.
        if config.predict_relative_actions:
            policy.relative_action_normalizer.set_stats(torch.zeros(s.state_dim), torch.ones(s.state_dim))
        if hasattr(policy, "state_normalizer"):
            policy.state_normalizer.set_stats(torch.zeros(s.state_dim), torch.ones(s.state_dim))
        window = len(config.action_delta_indices)  # the anchor too, with relative_anchor=last_action
        delays = config.delays_per_sample if config.rtc_train_all_delays else 1
        targets = s.batch_size * s.chunk_size * delays
    batch = {
        OBS_STATE: torch.randn(s.batch_size, s.state_dim),
        ACTION: torch.randn(s.batch_size, window, s.state_dim),
        f"{ACTION}_is_pad": torch.zeros(s.batch_size, window, dtype=torch.bool),
    }
    if s.env_state_dim:
        batch[OBS_ENV_STATE] = torch.randn(s.batch_size, s.env_state_dim)
    if s.image_size:
        batch[IMAGE_KEY] = torch.rand(s.batch_size, 3, s.image_size, s.image_size)
    batch = {key: value.to(device) for key, value in batch.items()}
    return Variant(name, policy.to(device).train(), batch, targets)


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The stages the model has: a policy without a camera has no backbone (its stage then reads 0)."""
    return [(stage, getattr(model, stage)) for stage in STAGES if hasattr(model, stage)]


class Clock:
    """Timestamps cheap enough to take inside a step, read after it. On a GPU they are CUDA events, as the
    host runs ahead of the kernels; on CPU an op has finished when it returns, so perf_counter is exact."""

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


class StageTimer:
    """Pre-hook/hook pairs on the backbone, encoder and decoder; `pop_ms` sums each stage's calls."""

    def __init__(self, model: nn.Module, clock: Clock):
        self.clock = clock
        self.marks: dict[str, list] = {stage: [] for stage in STAGES}
        self.handles = []
        for stage, module in stage_modules(model):
            self.handles.append(module.register_forward_pre_hook(partial(self._mark, stage)))
            self.handles.append(module.register_forward_hook(partial(self._mark, stage)))

    def _mark(self, stage: str, *_) -> None:
        self.marks[stage].append(self.clock.mark())

    def pop_ms(self) -> dict[str, float]:
        times = {f"{stage}_ms": sum(map(self.clock.ms, m[::2], m[1::2])) for stage, m in self.marks.items()}
        for marks in self.marks.values():
            marks.clear()
        return times

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def time_interleaved(variants: list[Variant], settings: Settings, clock: Clock) -> dict[str, dict]:
    """Per variant: the median over the measured steps of the step, forward, backward and stage times."""
    timers = {v.name: StageTimer(v.policy.model, clock) for v in variants}
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    for step in range(settings.warmup + settings.steps):
        for variant in rotated(variants, step):
            variant.policy.zero_grad(set_to_none=True)
            clock.sync()
            start = clock.mark()
            loss, _ = variant.policy.forward(variant.batch)
            forward_end = clock.mark()
            loss.backward()
            end = clock.mark()
            clock.sync()
            stages = timers[variant.name].pop_ms()
            if step < settings.warmup:
                continue
            sample = {"step_ms": clock.ms(start, end), "forward_ms": clock.ms(start, forward_end), **stages}
            sample["rest_ms"] = sample["forward_ms"] - sum(stages.values())
            sample["backward_ms"] = sample["step_ms"] - sample["forward_ms"]
            samples[variant.name].append(sample)
    for timer in timers.values():
        timer.remove()
    medians = {}
    for name, rows in samples.items():
        medians[name] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        medians[name]["step_ms_samples"] = [row["step_ms"] for row in rows]
    return medians
