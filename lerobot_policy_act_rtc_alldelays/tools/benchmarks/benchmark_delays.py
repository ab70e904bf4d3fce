"""Delays per sample (`act-rtc-alldelays-benchmark --delays-per-sample`): what K delays per sample cost.

At two sizes, times the training step of the one-delay baseline (`rtc_train_all_delays=false`) and of
K in {1, 2, 3, D} delays per sample under both attention modes, all in one interleaved run per size, and
reports each as a ratio to the one-delay step of that run: on a shared machine absolute times drift with the
load, while the ratios of one interleaved run hold.

- state-only: the MetaWorld study's policy and shapes, where no image backbone hides the transformer's cost
  of K sequences per sample. Shared observation is refused there (nothing to share): the refusal and its
  reason are reported in its rows.
- image: the benchmark's base size (the options of the default run set it).
"""

import argparse
import statistics
import sys
from dataclasses import asdict, replace
from typing import Any

import torch

from ..policy_sizes import STATE_STUDY
from ..report import format_value, markdown_table, write_report
from .step_timing import OFF, RTC_FIELDS, Clock, Settings, build_variant, time_interleaved

ONE_DELAY = "one_delay"
ATTENTIONS = ("full", "shared_observation")
AT_MOST = 2.0  # the bound on a state-only step, in one-delay steps
# The study's shapes (tools/study: StudySettings' defaults, metaworld.state's features), written out rather
# than imported so that the benchmark does not need MetaWorld; a test checks that they still agree.
STATE_ONLY = Settings(
    backbone="resnet18",  # unused: no camera
    image_size=0,
    batch_size=32,
    chunk_size=18,
    rtc_max_delay=8,
    dim_model=STATE_STUDY["dim_model"],
    dim_feedforward=STATE_STUDY["dim_feedforward"],
    n_layers=STATE_STUDY["n_encoder_layers"],
    n_heads=STATE_STUDY["n_heads"],
    state_dim=4,
    env_state_dim=39,
    pre_norm=False,  # ACT's default, which the study keeps
    predict_relative_actions=True,  # the study's position targets, relative to the hand
    warmup=5,
    steps=40,
)


def delay_counts(settings: Settings) -> list[int]:
    """K in {1, 2, 3, D}, those that D = rtc_max_delay + 1 allows."""
    n_delays = settings.rtc_max_delay + 1
    return sorted({k for k in (1, 2, 3, n_delays) if k <= n_delays})


def k_variants(settings: Settings) -> dict[str, dict[str, Any]]:
    """Variant name -> config fields, for each attention mode and K."""
    return {
        f"{attention}_k{k}": dict(
            rtc_train_all_delays=True, rtc_prefix_attention=attention, rtc_delays_per_sample=k
        )
        for attention in ATTENTIONS
        for k in delay_counts(settings)
    }


def quartiles(values: list[float]) -> list[float] | None:
    """25th and 75th percentiles, or None under two values."""
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [q1, q3]


def benchmark_size(settings: Settings, device: torch.device) -> dict:
    """One interleaved run of the one-delay step and every K variant that the config accepts at this size."""
    k_fields = k_variants(settings)
    built = [build_variant(ONE_DELAY, settings, device, RTC_FIELDS[OFF])]
    refused = {}
    for name, rtc_fields in k_fields.items():
        try:
            built.append(build_variant(name, settings, device, rtc_fields))
        except ValueError as error:  # the config refuses this mode at this size: report why
            refused[name] = str(error)
    targets = {variant.name: variant.targets_per_step for variant in built}
    timings = time_interleaved(built, settings, Clock(device))
    reference = timings[ONE_DELAY]
    rows = []
    for name, rtc_fields in {ONE_DELAY: RTC_FIELDS[OFF], **k_fields}.items():
        row = {
            "variant": name,
            "attention": rtc_fields["rtc_prefix_attention"],
            "delays_per_sample": rtc_fields.get("rtc_delays_per_sample", 1),
            "refused": refused.get(name),
        }
        if name in timings:
            timing = timings[name]
            # Step by step: both steps of a round ran under the same load.
            per_step = [
                step / one
                for step, one in zip(timing["step_ms_samples"], reference["step_ms_samples"], strict=True)
            ]
            row |= {
                "step_ms": timing["step_ms"],
                "forward_ms": timing["forward_ms"],
                "backward_ms": timing["backward_ms"],
                "ratio_to_one_delay": timing["step_ms"] / reference["step_ms"],
                "per_step_ratio_quartiles": quartiles(per_step),
                "targets_per_step": targets[name],
                "step_ms_samples": timing["step_ms_samples"],
            }
        rows.append(row)
    within = [
        row["variant"] for row in rows[1:] if not row["refused"] and row["ratio_to_one_delay"] <= AT_MOST
    ]
    return {"settings": asdict(settings), "rows": rows, f"at_most_{AT_MOST}x_one_delay": within}


def render_size(title: str, point: dict) -> str:
    s = point["settings"]
    camera = f"{s['backbone']} at {s['image_size']} px" if s["image_size"] else "no camera"
    inputs = f"state {s['state_dim']}" + (
        f" + environment state {s['env_state_dim']}" if s["env_state_dim"] else ""
    )
    table_rows = []
    for row in point["rows"]:
        timed = row["refused"] is None
        spread = row.get("per_step_ratio_quartiles")
        table_rows.append(
            [
                row["variant"],
                row["attention"],
                row["delays_per_sample"],
                row["step_ms"] if timed else "refused",
                f"{format_value(row['ratio_to_one_delay'])}x" if timed else "-",
                f"{spread[0]:.2f}-{spread[1]:.2f}x" if spread else "-",
                row.get("targets_per_step"),
            ]
        )
    sections = [
        f"### {title}: dim {s['dim_model']}, {s['n_heads']} heads, ff {s['dim_feedforward']}, "
        f"{s['n_layers']}+{s['n_layers']} layers, {camera}, {inputs}, chunk {s['chunk_size']}, "
        f"rtc_max_delay {s['rtc_max_delay']} (D = {s['rtc_max_delay'] + 1}), batch {s['batch_size']}; "
        f"{s['steps']} timed steps per variant after {s['warmup']} warm-up",
        markdown_table(
            [
                "variant",
                "attention",
                "K",
                "step ms (median)",
                "vs one delay",
                "per-step ratio, 25-75%",
                "targets/step",
            ],
            table_rows,
            digits=1,
        ),
    ]
    reasons: dict[str, list[str]] = {}
    for row in point["rows"]:
        if row["refused"]:
            reasons.setdefault(row["refused"], []).append(row["variant"])
    sections += [f"Refused ({', '.join(names)}): {reason}" for reason, names in reasons.items()]
    within = point[f"at_most_{AT_MOST}x_one_delay"]
    sections.append(f"At most {AT_MOST}x the one-delay step: {', '.join(within) or 'none'}")
    return "\n\n".join(sections)


def run_delays_per_sample(
    args: argparse.Namespace, image: Settings, device: torch.device, environment: dict[str, str]
) -> None:
    """Both sizes, one interleaved run each; prints the markdown and writes it with the JSON."""
    state_overrides = {"warmup": args.state_warmup, "steps": args.state_steps}
    state_only = replace(STATE_ONLY, **{k: v for k, v in state_overrides.items() if v is not None})
    sizes = {"state_only": ("State-only (the study's size)", state_only), "image": ("Image", image)}
    points = {}
    for key, (_, settings) in sizes.items():
        print(f"[{key}] {settings}", file=sys.stderr, flush=True)
        points[key] = benchmark_size(settings, device)
    report = {"environment": environment, "sizes": points}
    text = "\n\n".join(
        [
            f"Device: {environment['device']} | torch {environment['torch']} | "
            f"lerobot {environment['lerobot']}",
            "Training step (forward + backward, no optimizer) of K delays per sample, as a ratio to the "
            "one-delay step (`rtc_train_all_delays=false`) measured in the same interleaved run.",
            *(render_size(title, points[key]) for key, (title, _) in sizes.items()),
        ]
    )
    print(text)
    written = write_report(args.output_dir, "benchmark_delays_per_sample", report, text)
    print(f"\nWrote {', '.join(map(str, written))}", file=sys.stderr)
