"""The study's policies and their training: configs, seeded creation, the training loop, the interleaved
step-time calibration and the equal wall-clock budget."""

import dataclasses
import json
import time
from typing import Any

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION

from ...configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from ...dataset_derived import init_from_columns
from ...modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from ..interleave import rotated
from ..metaworld.state import state_features
from ..policy_sizes import STATE_STUDY
from .act_smooth import act_smooth_config, act_smooth_policy, is_act_smooth
from .data import TrainingData
from .settings import StudySettings
from .variants import ACT, ACT_SMOOTH_VARIANTS, PEERS, peer_overrides, variant_overrides

# (budget, its nominal steps): the labels of a trained model's rows; equal_time's nominal steps are those of
# the reference run whose time it shares.
Budget = tuple[str, int]


def predicts_relative_actions(variant: str, settings: StudySettings) -> bool:
    """Whether the variant's policy predicts actions relative to the state: never for LeRobot's ACT or
    ACTSmooth (which anchors them at its first committed action, after normalization); under position
    targets as the shipped default does, unless the variant pins it; never under MetaWorld's deltas, which
    are not targets in the state's space."""
    if variant in PEERS or settings.actions == "delta":
        return False
    shipped = ACTRelativeRTCAllDelaysConfig.predict_relative_actions  # the dataclass field's default
    return variant_overrides(variant).get("predict_relative_actions", shipped)


def policy_config(variant: str, settings: StudySettings) -> PreTrainedConfig:
    inputs, outputs = state_features()
    relative = predicts_relative_actions(variant, settings)
    # Every input normalized: MetaWorld's coordinates vary by a few centimetres around offsets of up to a
    # metre, which a raw input layer learns slowly. With relative actions the model normalizes the state
    # and the relative actions itself, from the raw values.
    normalized = ("ENV",) if relative else ("STATE", "ENV", "ACTION")
    shared = dict(
        device="cpu",
        push_to_hub=False,
        normalization_mapping={kind: NormalizationMode.MEAN_STD for kind in normalized},
        input_features=inputs,
        output_features=outputs,
        chunk_size=settings.chunk_size,
        n_action_steps=settings.n_action_steps,
        optimizer_lr=settings.lr,
        optimizer_lr_backbone=settings.lr,
        **STATE_STUDY,
    )
    if variant == ACT:
        return ACTConfig(**shared)
    if variant in ACT_SMOOTH_VARIANTS:
        return act_smooth_config({**shared, **peer_overrides(variant)}, settings.rtc_max_delay)
    overrides = {k: v for k, v in variant_overrides(variant).items() if k != "predict_relative_actions"}
    return ACTRelativeRTCAllDelaysConfig(
        **{**shared, **overrides}, rtc_max_delay=settings.rtc_max_delay, predict_relative_actions=relative
    )


def config_record(config: PreTrainedConfig) -> dict[str, Any]:
    """A policy config as a unit records it, in JSON: every field, and this policy's blend steps as the
    number its `select_action` uses (`rtc_blend_steps=None` resolved)."""
    record = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    if hasattr(config, "blend_steps"):
        record["rtc_blend_steps"] = config.blend_steps
    return record


def new_policy(config: PreTrainedConfig, seed: int) -> PreTrainedPolicy:
    """Seeded right before creation: RTC variants with the same parameters (all but the state token's and
    the mask token's) get the same initial weights from a seed."""
    torch.manual_seed(seed)
    if is_act_smooth(config):
        return act_smooth_policy(config)
    policy_class = ACTPolicy if isinstance(config, ACTConfig) else ACTRelativeRTCAllDelaysPolicy
    return policy_class(config)


class Trainer:
    """The study's training loop for one variant and seed: LeRobot's policy forward, the policy's AdamW
    preset and gradient clipping, batches drawn from a generator seeded like the policy, so every variant of
    a seed sees the same batches."""

    def __init__(self, variant: str, seed: int, settings: StudySettings, data: TrainingData):
        self.variant = variant
        self.config = policy_config(variant, settings)
        # As trained: the evaluation reconfigures the inference fields of this policy's config.
        self.config_record = config_record(self.config)
        self.policy = new_policy(self.config, seed)
        if getattr(self.config, "predict_relative_actions", False):
            init_from_columns(self.policy, data.columns)  # as `make_policy` does from a dataset
        self.windows, self.preprocessor, self.postprocessor = data.get(self.config)
        optimizer_config = self.config.get_optimizer_preset()
        self.optimizer = optimizer_config.build(self.policy.get_optim_params())
        self.grad_clip_norm = optimizer_config.grad_clip_norm
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = settings.batch_size
        self.steps = 0
        self.seconds = 0.0
        self.last_loss = float("nan")

    def train(self, steps: int) -> None:
        self.policy.train()
        n_frames = len(self.windows[ACTION])
        start = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(n_frames, (self.batch_size,), generator=self.generator)
            loss, _ = self.policy.forward({key: value[index] for key, value in self.windows.items()})
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip_norm)
            self.optimizer.step()
        self.last_loss = float(loss.item()) if steps else self.last_loss
        self.seconds += time.perf_counter() - start
        self.steps += steps
        self.policy.eval()


def calibrate(settings: StudySettings, data: TrainingData) -> dict[str, float]:
    """Seconds per training step of each variant, from one interleaved run: `calibration_steps` steps of
    each variant in turn, `calibration_rounds` times (after one warm-up round); the median per variant."""
    trainers = {variant: Trainer(variant, 0, settings, data) for variant in settings.variants}
    for trainer in trainers.values():
        trainer.train(1)  # warm-up: allocations and first-call overheads
    times: dict[str, list[float]] = {variant: [] for variant in trainers}
    for round_index in range(settings.calibration_rounds):
        for variant in rotated(list(trainers), round_index):
            trainer = trainers[variant]
            before = trainer.seconds
            trainer.train(settings.calibration_steps)
            times[variant].append((trainer.seconds - before) / settings.calibration_steps)
    return {variant: float(np.median(values)) for variant, values in times.items()}


def equal_time_steps(settings: StudySettings, seconds_per_step: dict[str, float]) -> dict[str, int]:
    """Steps per variant that fit the reference variant's time for `reference_steps` steps."""
    budget = settings.reference_steps * seconds_per_step[settings.reference]
    return {v: max(1, round(budget / seconds_per_step[v])) for v in settings.variants}


def training_runs(settings: StudySettings, time_steps: int | None) -> list[tuple[int, list[Budget]]]:
    """(steps, budgets) per training of a variant, by steps ascending: one run per step count of the scan,
    and the equal wall-clock run, which reuses the scan's run of the same step count (same seed, same
    batches: the same model)."""
    runs: dict[int, list[Budget]] = {steps: [("equal_steps", steps)] for steps in settings.steps}
    if settings.equal_time and time_steps is not None:
        runs.setdefault(time_steps, []).append(("equal_time", settings.reference_steps))
    return sorted(runs.items())
