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
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from ..policy_sizes import DESIGN_NOTE, SMALL
from ..report import format_value, markdown_table, write_report
from .benchmark_delays import run_delays_per_sample
from .step_timing import (
    ACT,
    OFF,
    ON,
    SHARED,
    STAGES,
    Clock,
    Settings,
    Variant,
    build_variant,
    stage_modules,
    time_interleaved,
)

MB = 2**20
NO_MEMORY = {"peak_step_memory_mb": None} | {f"{stage}_activations_mb": None for stage in STAGES}
MEMORY_MEANING = {
    "cuda": "CUDA allocator peak of one step minus the allocation before it (weights, batches); "
    "gradients are freed before each step, so they count in the peak. Activations: allocation growth over "
    "a stage's forward.",
    "cpu": "Peak RSS of one step minus the RSS before it, in a fresh process after a warm-up step (Linux); "
    "gradients are freed before each step, so they count in the peak. Activations: RSS growth over a stage.",
}


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


def train_step(variant: Variant) -> None:
    variant.policy.zero_grad(set_to_none=True)
    loss, _ = variant.policy.forward(variant.batch)
    loss.backward()


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
        "from lerobot_policy_act_rtc_alldelays.tools.benchmarks.benchmark import cpu_memory_in_this_process\n"
        "from lerobot_policy_act_rtc_alldelays.tools.benchmarks.step_timing import Settings\n"
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
