"""Training-step benchmark: all-delays on vs all-delays off vs LeRobot's ACT at the same sizes.

Times optimizer-free forward+backward steps, interleaved across the variants so that machine drift hits
them alike, splits the forward pass into backbone, encoder, decoder and the rest, and measures the peak
memory of a step. Prints markdown tables and writes every figure to JSON.

    act-rtc-alldelays-benchmark                  # design-note configuration on a GPU, a small one on CPU
    act-rtc-alldelays-benchmark --sweep          # vary delay, batch, backbone and image size one at a time
    act-rtc-alldelays-benchmark --delays-per-sample  # K delays per sample, state-only and image sizes
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from torch import Tensor, nn

from ..configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from ..modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysPolicy
from .interleave import rotated
from .policy_sizes import DESIGN_NOTE, SMALL
from .report import format_value, markdown_table, write_report
from .synthetic_dataset import IMAGE_KEY

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
MB = 2**20
NO_MEMORY = {"peak_step_memory_mb": None} | {f"{stage}_activations_mb": None for stage in STAGES}
MEMORY_MEANING = {
    "cuda": "CUDA allocator peak of one step minus the allocation before it (weights, batches); "
    "gradients are freed before each step, so they count in the peak. Activations: allocation growth over "
    "a stage's forward.",
    "cpu": "Peak RSS of one step minus the RSS before it, in a fresh process after a warm-up step (Linux); "
    "gradients are freed before each step, so they count in the peak. Activations: RSS growth over a stage.",
}


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


# The design note's size on a GPU; on CPU the CPU study size at 96 px, which finishes in minutes.
DEFAULTS = {
    "cuda": Settings(
        backbone=DESIGN_NOTE["vision_backbone"],
        image_size=224,
        batch_size=32,
        chunk_size=DESIGN_NOTE["chunk_size"],
        rtc_max_delay=3,
        dim_model=DESIGN_NOTE["dim_model"],
        dim_feedforward=DESIGN_NOTE["dim_feedforward"],
        n_layers=DESIGN_NOTE["n_encoder_layers"],
        warmup=5,
        steps=30,
    ),
    "cpu": Settings(
        backbone=SMALL["vision_backbone"],
        image_size=96,
        batch_size=8,
        chunk_size=8,
        rtc_max_delay=3,
        dim_model=SMALL["dim_model"],
        dim_feedforward=SMALL["dim_feedforward"],
        n_layers=SMALL["n_encoder_layers"],
        warmup=2,
        steps=10,
    ),
}
SWEEP = {
    "rtc_max_delay": (1, 3, 7),
    "batch_size": (8, 32),
    "backbone": ("resnet18", "resnet34"),
    "image_size": (96, 224),
}


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
        window = config.action_window_size
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


def train_step(variant: Variant) -> None:
    variant.policy.zero_grad(set_to_none=True)
    loss, _ = variant.policy.forward(variant.batch)
    loss.backward()


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


class KeptMemory:
    """What each stage's forward leaves allocated, read by `allocated_bytes` before and after it: the
    activations the stage saves for the backward pass, and its output."""

    def __init__(self, model: nn.Module, allocated_bytes: Callable[[], int]):
        self.allocated_bytes = allocated_bytes
        self.kept = dict.fromkeys(STAGES, 0)
        self.handles = []
        for stage, module in stage_modules(model):
            self.handles.append(module.register_forward_pre_hook(partial(self._add, stage, -1)))
            self.handles.append(module.register_forward_hook(partial(self._add, stage, 1)))

    def _add(self, stage: str, sign: int, *_) -> None:
        self.kept[stage] += sign * self.allocated_bytes()

    def remove_mb(self) -> dict[str, float]:
        for handle in self.handles:
            handle.remove()
        return {f"{stage}_activations_mb": kept / MB for stage, kept in self.kept.items()}


def cuda_memory(variant: Variant) -> dict[str, float]:
    """Step peak above the resident allocation, and the activations each stage keeps."""
    variant.policy.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.synchronize()
    kept = KeptMemory(variant.policy.model, torch.cuda.memory_allocated)
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    train_step(variant)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - resident) / MB
    return {"peak_step_memory_mb": peak} | kept.remove_mb()


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def cpu_memory_in_this_process(name: str, settings: Settings) -> dict[str, float]:
    """Run by `cpu_memory` in a fresh process: the peak RSS of one step above the RSS before it, and the
    activations each stage keeps, as RSS growth."""
    variant = build_variant(name, settings, torch.device("cpu"))
    # The first step faults in library code and builds kernels, which then stay resident: keep them out.
    train_step(variant)
    variant.policy.zero_grad(set_to_none=True)
    kept = KeptMemory(variant.policy.model, partial(_proc_status_bytes, "VmRSS"))
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = _proc_status_bytes("VmRSS")
    train_step(variant)
    return {"peak_step_memory_mb": (_proc_status_bytes("VmHWM") - before) / MB} | kept.remove_mb()


def cpu_memory(name: str, settings: Settings) -> dict[str, float | None]:
    """Each variant runs in a fresh process, since glibc keeps freed memory for reuse and a step could then
    peak inside memory that an earlier step already made resident. A fixed mmap threshold makes glibc
    return every tensor-sized block to the system when it is freed, so the warm-up step leaves none."""
    if not sys.platform.startswith("linux"):
        return NO_MEMORY
    code = (
        "import json\n"
        "from lerobot_policy_act_rtc_alldelays.tools.benchmark import Settings, cpu_memory_in_this_process\n"
        f"print(json.dumps(cpu_memory_in_this_process({name!r}, Settings(**{asdict(settings)!r}))))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(child.stdout.splitlines()[-1])


def transformer_activations(row: dict) -> float | None:
    encoder, decoder = row["encoder_activations_mb"], row["decoder_activations_mb"]
    return None if encoder is None else encoder + decoder


def _difference(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def benchmark_point(settings: Settings, names: list[str], device: torch.device, measure_memory: bool) -> dict:
    variants = [build_variant(name, settings, device) for name in names]
    results = time_interleaved(variants, settings, Clock(device))
    for variant in variants:
        row = results[variant.name]
        row["targets_per_step"] = variant.targets_per_step
        row["targets_per_s"] = variant.targets_per_step / (row["step_ms"] / 1e3)
        for key in (*STAGES, "rest"):
            row[f"{key}_pct"] = 100 * row[f"{key}_ms"] / row["forward_ms"]
        row |= NO_MEMORY
        if measure_memory:
            row |= cuda_memory(variant) if device.type == "cuda" else cpu_memory(variant.name, settings)
    del variants
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    on, shared, off, act = results[ON], results[SHARED], results[OFF], results.get(ACT)
    extra_mb = _difference(on["peak_step_memory_mb"], off["peak_step_memory_mb"])
    headline = {
        "time_ratio_on_off": on["step_ms"] / off["step_ms"],
        "time_ratio_shared_off": shared["step_ms"] / off["step_ms"],
        "extra_memory_shared_vs_off_mb": _difference(
            shared["peak_step_memory_mb"], off["peak_step_memory_mb"]
        ),
        "time_ratio_act_off": act["step_ms"] / off["step_ms"] if act else None,
        "targets_per_s_ratio_on_off": on["targets_per_s"] / off["targets_per_s"],
        "extra_memory_on_vs_off_mb": extra_mb,
        # All delays may only add the transformer's activations for B*D sequences, nothing of image size:
        # the backbone's should not grow. The peak grows less when the gradients, not activations, set it.
        "extra_backbone_activations_mb": _difference(
            on["backbone_activations_mb"], off["backbone_activations_mb"]
        ),
        "extra_transformer_activations_mb": _difference(
            transformer_activations(on), transformer_activations(off)
        ),
    }
    return {"settings": asdict(settings), "variants": results, "headline": headline}


def ratio(value: float | None) -> str:
    return f"{format_value(value)}x"


def render_markdown(report: dict) -> str:
    env, base = report["environment"], report["points"][0]
    variants, headline = base["variants"], base["headline"]
    off = variants[OFF]
    step_rows = [
        [
            name,
            row["step_ms"],
            ratio(row["step_ms"] / off["step_ms"]),
            row["targets_per_step"],
            round(row["targets_per_s"]),
            row["peak_step_memory_mb"],
            _difference(row["peak_step_memory_mb"], off["peak_step_memory_mb"]),
            row["backbone_activations_mb"],
            transformer_activations(row),
        ]
        for name, row in variants.items()
    ]
    stage_rows = [
        [
            name,
            row["forward_ms"],
            *(f"{row[f'{k}_ms']:.1f} ms ({row[f'{k}_pct']:.1f}%)" for k in (*STAGES, "rest")),
            row["backward_ms"],
        ]
        for name, row in variants.items()
    ]
    sections = [
        f"Device: {env['device']} | torch {env['torch']} | lerobot {env['lerobot']}",
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in base["settings"].items()),
        markdown_table(
            [
                "variant",
                "step ms (median)",
                "vs off",
                "targets/step",
                "targets/s",
                "peak step MB",
                "extra peak MB vs off",
                "backbone act. MB",
                "enc+dec act. MB",
            ],
            step_rows,
            digits=1,
        ),
        f"Memory: {report['memory_meaning']}",
        markdown_table(
            ["variant", "forward ms", "backbone", "encoder", "decoder", "rest", "backward ms"],
            stage_rows,
            digits=1,
        ),
        f"Headline: step time on/off {ratio(headline['time_ratio_on_off'])} (shared-observation "
        f"{ratio(headline['time_ratio_shared_off'])}); supervised targets/s on/off "
        f"{ratio(headline['targets_per_s_ratio_on_off'])}; extra peak memory on vs off "
        f"{format_value(headline['extra_memory_on_vs_off_mb'], 1)} MB; extra activations kept by "
        f"the encoder+decoder {format_value(headline['extra_transformer_activations_mb'], 1)} MB, by the "
        f"backbone {format_value(headline['extra_backbone_activations_mb'], 1)} MB",
    ]
    if len(report["points"]) > 1:
        sweep_rows = []
        for point in report["points"]:
            s, h = point["settings"], point["headline"]
            sweep_rows.append(
                [
                    s["backbone"],
                    s["image_size"],
                    s["batch_size"],
                    s["rtc_max_delay"],
                    ratio(h["time_ratio_on_off"]),
                    ratio(h["time_ratio_shared_off"]),
                    ratio(h["time_ratio_act_off"]),
                    ratio(h["targets_per_s_ratio_on_off"]),
                    h["extra_memory_on_vs_off_mb"],
                    h["extra_transformer_activations_mb"],
                    h["extra_backbone_activations_mb"],
                ]
            )
        sections += [
            "Sweep, one factor at a time around the configuration above:",
            markdown_table(
                [
                    "backbone",
                    "px",
                    "batch",
                    "rtc_max_delay",
                    "on/off time",
                    "shared-obs/off time",
                    "ACT/off time",
                    "targets/s on/off",
                    "extra peak MB on vs off",
                    "extra enc+dec act. MB",
                    "extra backbone act. MB",
                ],
                sweep_rows,
                digits=1,
            ),
        ]
    return "\n\n".join(sections)


def sweep_points(base: Settings) -> list[Settings]:
    """The base configuration, then each sweep value that differs from it, one factor at a time."""
    points = [base]
    for name, values in SWEEP.items():
        points += [replace(base, **{name: value}) for value in values if value != getattr(base, name)]
    return points


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", action="store_true", help="vary one factor at a time around the base")
    parser.add_argument("--no-act", action="store_true", help="skip LeRobot's ACT")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--delays-per-sample",
        action="store_true",
        help="time K delays per sample against the one-delay step, at the state-only study size and at the "
        "image size that the other options set (see benchmark_delays)",
    )
    parser.add_argument(
        "--state-warmup", type=int, help="--delays-per-sample: state-only size's warm-up steps"
    )
    parser.add_argument("--state-steps", type=int, help="--delays-per-sample: state-only size's timed steps")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("benchmark_out"), help="for benchmark.json and benchmark.md"
    )
    for field in fields(Settings):
        # A bool field as --flag/--no-flag: argparse's bool() would read any given text as True.
        kind = {"action": argparse.BooleanOptionalAction} if field.type is bool else {"type": field.type}
        parser.add_argument(f"--{field.name.replace('_', '-')}", **kind, help="default: per device")
    args = parser.parse_args(argv)
    if torch.device(args.device).type not in DEFAULTS:
        parser.error(f"--device must be a CUDA device or cpu, got '{args.device}'.")
    return args


def environment(device: torch.device, load_average: float) -> dict[str, str]:
    """The device, torch and lerobot the figures were measured with."""
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        device_name = (
            f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
            f"load average {load_average:.2f} at start"
        )
    return {"device": device_name, "torch": torch.__version__, "lerobot": version("lerobot")}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    # Other processes on the CPU cores stall torch's threads at every parallel region: keep the load in view.
    load_average = os.getloadavg()[0]
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)  # the allocator statistics read the current device
        # As lerobot-train sets them, so that the steps are the ones training runs.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    overrides = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name) is not None}
    base = replace(DEFAULTS[device.type], **overrides)
    if args.delays_per_sample:
        # Imported here: benchmark_delays builds on this module's pieces.
        from .benchmark_delays import run_delays_per_sample

        run_delays_per_sample(args, base, device, environment(device, load_average))
        return
    names = [ON, SHARED, OFF] if args.no_act else [ON, SHARED, OFF, ACT]
    points = sweep_points(base) if args.sweep else [base]
    results = []
    for index, settings in enumerate(points, 1):
        print(f"[{index}/{len(points)}] {settings}", file=sys.stderr, flush=True)
        results.append(benchmark_point(settings, names, device, measure_memory=not args.no_memory))
    report = {
        "environment": environment(device, load_average),
        "memory_meaning": MEMORY_MEANING[device.type],
        "points": results,
    }
    text = render_markdown(report)
    print(text)
    written = write_report(args.output_dir, "benchmark", report, text)
    print(f"\nWrote {', '.join(map(str, written))}", file=sys.stderr)


if __name__ == "__main__":
    main()
