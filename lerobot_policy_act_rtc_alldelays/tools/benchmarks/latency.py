"""Inference latency of a checkpoint, the delay it implies, and the matching `lerobot-rollout` settings.

Times warm `predict_action_chunk` calls of the checkpoint as LeRobot 0.6's real-time runtime makes them
(`inference_delay=rtc_max_delay`, the previous chunk as left-over), interleaved call by call with LeRobot's
ACT at the same sizes (random weights: latency does not depend on their values), and with ACT whose
attention returns no weights (`need_weights=False`, this policy's attention path), which separates what the
attention path buys from what the rest of this policy costs (its `rtc_max_delay` prefix tokens, the
relative-action conversion and the runtime bookkeeping).

    act-rtc-alldelays-latency outputs/run/checkpoints/last/pretrained_model --fps 30 --threads 1

Prints p50 / p95 / p99 per variant, the delay the checkpoint's p99 implies (`ceil(p99 x fps)` control
steps), whether `rtc_max_delay` covers it, and a `lerobot-rollout` command line with matching runtime
settings. Writes latency.json and latency.md to `--output-dir`.
"""

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import draccus
import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.factory import get_policy_class
from lerobot.utils.constants import ACTION
from torch import Tensor

from ...attention import use_masked_attention
from ...inference_inputs import model_image_size
from ..interleave import rotated
from ..report import markdown_table, write_report

THIS_POLICY, ACT, ACT_NO_WEIGHTS = "this_policy", "lerobot_act", "lerobot_act_need_weights_false"
VARIANTS = (THIS_POLICY, ACT, ACT_NO_WEIGHTS)
RUNTIME_HORIZON = 10  # lerobot-rollout's default --inference.rtc.execution_horizon
# ACT's fields that set the network's size; the comparison copies them from the checkpoint.
ACT_SIZE_FIELDS = (
    "chunk_size",
    "n_action_steps",
    "vision_backbone",
    "replace_final_stride_with_dilation",
    "pre_norm",
    "dim_model",
    "n_heads",
    "dim_feedforward",
    "feedforward_activation",
    "n_encoder_layers",
    "n_decoder_layers",
    "use_vae",
    "latent_dim",
    "n_vae_encoder_layers",
)


def observation_batch(config: PreTrainedConfig, device: torch.device, seed: int = 0) -> dict[str, Tensor]:
    """A random batch of one observation, as the preprocessor hands it to the policy."""
    generator = torch.Generator().manual_seed(seed)
    batch = {}
    for key, feature in config.input_features.items():
        if feature.type is FeatureType.VISUAL:
            batch[key] = torch.rand(1, 3, *model_image_size(config, key), generator=generator)
        elif feature.type in (FeatureType.STATE, FeatureType.ENV):
            batch[key] = torch.randn(1, *feature.shape, generator=generator)
    return {key: value.to(device) for key, value in batch.items()}


def act_at_the_same_sizes(config: PreTrainedConfig, device: torch.device, no_weights: bool) -> ACTPolicy:
    """LeRobot's ACT with the checkpoint's sizes and inputs (images at the size the model sees)."""
    input_features = {
        key: PolicyFeature(type=feature.type, shape=(3, *model_image_size(config, key)))
        if feature.type is FeatureType.VISUAL
        else feature
        for key, feature in config.input_features.items()
    }
    act_config = ACTConfig(
        device=device.type,
        input_features=input_features,
        output_features=dict(config.output_features),
        pretrained_backbone_weights=None,
        push_to_hub=False,
        **{name: getattr(config, name) for name in ACT_SIZE_FIELDS},
    )
    torch.manual_seed(0)
    policy = ACTPolicy(act_config)
    if no_weights:
        use_masked_attention(policy.model)
    return policy.to(device).eval()


def load_policy(source: str | Path, device: torch.device) -> torch.nn.Module:
    """A checkpoint (`pretrained_model` folder), or a lerobot-train JSON config whose `policy` section sets
    the sizes, to measure before training: random weights and unit relative-action statistics then, since
    latency does not depend on their values. The config's action defaults to the state's size."""
    source = Path(source)
    if source.suffix != ".json":
        config = PreTrainedConfig.from_pretrained(source)
        config.device = device.type
        policy = get_policy_class(config.type).from_pretrained(source, config=config)
        return policy.to(device).eval()
    fields = {**json.loads(source.read_text())["policy"], "device": device.type}
    fields["pretrained_backbone_weights"] = None  # offline: the weights' values do not change latency
    config = draccus.decode(PreTrainedConfig, fields)
    if not config.output_features:
        if config.robot_state_feature is None:
            raise ValueError(f"{source} sets no output features and no state to size the action from.")
        config.output_features = {
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=config.robot_state_feature.shape)
        }
    torch.manual_seed(0)
    policy = get_policy_class(config.type)(config)
    if getattr(config, "predict_relative_actions", False):
        dim = config.action_feature.shape[0]
        policy.relative_action_normalizer.set_stats(torch.zeros(dim), torch.ones(dim))
    if hasattr(policy, "state_normalizer"):  # the state token's statistics, with relative actions
        dim = config.robot_state_feature.shape[0]
        policy.state_normalizer.set_stats(torch.zeros(dim), torch.ones(dim))
    return policy.to(device).eval()


def runtime_call(policy: torch.nn.Module, batch: dict[str, Tensor]):
    """Calls as LeRobot 0.6's real-time runtime makes them, at the largest trained delay: each call's
    left-over is the tail of the chunk the previous call returned, zero-padded to the runtime's default
    `execution_horizon` of 10 rows."""
    delay = policy.config.rtc_max_delay
    n_left = max(delay, 1)

    def padded_tail(chunk: Tensor) -> Tensor:
        tail = chunk[0, -n_left:]
        return torch.cat([tail, tail.new_zeros(max(0, RUNTIME_HORIZON - n_left), tail.shape[1])])

    first = policy.predict_action_chunk(batch, inference_delay=0, prev_chunk_left_over=None)
    left_over = [padded_tail(first)]

    def call() -> Tensor:
        chunk = policy.predict_action_chunk(batch, inference_delay=delay, prev_chunk_left_over=left_over[0])
        left_over[0] = padded_tail(chunk)
        return chunk

    return call


def measure(
    checkpoint: str | Path,
    device: str = "cpu",
    warmup: int = 5,
    iterations: int = 50,
    threads: int | None = None,
) -> dict[str, Any]:
    """Times the three variants interleaved call by call. Returns latencies in seconds per variant."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch_device = torch.device(device)
    policy = load_policy(checkpoint, torch_device)
    config = policy.config
    batch = observation_batch(config, torch_device)
    policies = {
        THIS_POLICY: policy,
        ACT: act_at_the_same_sizes(config, torch_device, no_weights=False),
        ACT_NO_WEIGHTS: act_at_the_same_sizes(config, torch_device, no_weights=True),
    }
    calls = {
        THIS_POLICY: runtime_call(policy, batch),
        ACT: _act_call(policies[ACT], batch),
        ACT_NO_WEIGHTS: _act_call(policies[ACT_NO_WEIGHTS], batch),
    }
    timers = {name: BackboneTimer(p.model, torch_device) for name, p in policies.items()}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    backbone_seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with torch.no_grad():
        for step in range(warmup + iterations):
            for name in rotated(VARIANTS, step):
                timers[name].total = 0.0
                elapsed = _time_call(calls[name], torch_device)
                if step >= warmup:
                    seconds[name].append(elapsed)
                    backbone_seconds[name].append(timers[name].total)
    return {
        "checkpoint": str(checkpoint),
        "device": device,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "iterations": iterations,
        "sizes": {name: getattr(config, name) for name in (*ACT_SIZE_FIELDS, "rtc_max_delay")},
        "image_sides": {key: model_image_size(config, key) for key in config.image_features},
        "seconds": seconds,
        "backbone_seconds": backbone_seconds,
    }


class BackboneTimer:
    """Adds up the time spent in `model.backbone` (both policies' ResNet), so the rest of a call, where the
    two policies differ, can be compared without the backbone's share of the machine's noise."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.total = 0.0
        self._device = device
        self._started = 0.0
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            backbone.register_forward_pre_hook(self._start)
            backbone.register_forward_hook(self._stop)

    def _now(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def _start(self, *_) -> None:
        self._started = self._now()

    def _stop(self, *_) -> None:
        self.total += self._now() - self._started


def _act_call(policy: ACTPolicy, batch: dict[str, Tensor]):
    return lambda: policy.predict_action_chunk(batch)


def _time_call(call, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50, p95 and p99 in milliseconds."""
    values = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}


def paired_ratio(seconds: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over interleaved rounds of `name`'s time / `reference`'s time in the same round: robust to a
    shared machine whose load drifts between rounds."""
    return float(np.median(np.asarray(seconds[name]) / np.asarray(seconds[reference])))


def runtime_settings(config: PreTrainedConfig, fps: float, delay: int) -> dict[str, int | float]:
    """`lerobot-rollout --inference.type=rtc` settings for this policy at an inference delay of `delay`.

    - execution_horizon: how many left-over actions the runtime passes back; the policy reads the first
      min(delay, rtc_max_delay), so any value >= rtc_max_delay works; chunk_size passes them all.
    - queue_threshold: the next chunk is requested when this many actions remain. With
      chunk_size - n_action_steps + delay, each chunk contributes n_action_steps actions, as in
      `select_action`, and the `delay` actions left keep the robot busy while inference runs.
    - interpolation_multiplier: 1 sends the policy's actions at `fps`; N > 1 sends N linearly interpolated
      commands per action (smoother servo motion; the policy and the delay are unchanged).
    """
    threshold = config.chunk_size - config.n_action_steps + delay
    return {
        "fps": fps,
        "execution_horizon": max(config.chunk_size, config.rtc_max_delay),
        "queue_threshold": min(max(threshold, delay), config.chunk_size),
        "interpolation_multiplier": 1,
    }


def rollout_command(checkpoint: str | Path, device: str, settings: dict[str, int | float]) -> str:
    fps = settings["fps"]
    fps_text = int(fps) if float(fps).is_integer() else fps
    return " \\\n  ".join(
        [
            "lerobot-rollout --strategy.type=base",
            f"--policy.path={'<checkpoint>' if str(checkpoint).endswith('.json') else checkpoint}",
            f"--inference.type=rtc --inference.rtc.execution_horizon={settings['execution_horizon']}",
            f"--inference.queue_threshold={settings['queue_threshold']}",
            f"--fps={fps_text} --interpolation_multiplier={settings['interpolation_multiplier']}",
            f"--device={device}",
            "--robot.type=so101_follower --robot.port=<port> --robot.id=<id>",
            '--robot.cameras="{ wrist: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}"',
            '--task="<task>" --duration=60',
        ]
    )


def summarize(measurement: dict[str, Any], fps: float) -> dict[str, Any]:
    """Adds percentiles, ratios, the implied delay and the runtime settings to a `measure` result."""
    stats = {name: percentiles(values) for name, values in measurement["seconds"].items()}
    rest = {
        name: list(np.asarray(totals) - np.asarray(measurement["backbone_seconds"][name]))
        for name, totals in measurement["seconds"].items()
    }
    p99 = stats[THIS_POLICY]["p99_ms"] / 1000.0
    delay = math.ceil(p99 * fps)
    max_delay = measurement["sizes"]["rtc_max_delay"]
    settings = runtime_settings(SimpleNamespace(**measurement["sizes"]), fps, delay)
    return {
        **measurement,
        "fps": fps,
        "latency_ms": stats,
        "paired_ratio_median": {
            "this_policy_vs_act": paired_ratio(measurement["seconds"], THIS_POLICY, ACT),
            "act_need_weights_false_vs_act": paired_ratio(measurement["seconds"], ACT_NO_WEIGHTS, ACT),
            "this_policy_vs_act_need_weights_false": paired_ratio(
                measurement["seconds"], THIS_POLICY, ACT_NO_WEIGHTS
            ),
        },
        "outside_backbone_p50_ms": {name: percentiles(values)["p50_ms"] for name, values in rest.items()},
        "outside_backbone_paired_ratio_median": {
            "this_policy_vs_act": paired_ratio(rest, THIS_POLICY, ACT),
            "act_need_weights_false_vs_act": paired_ratio(rest, ACT_NO_WEIGHTS, ACT),
            "this_policy_vs_act_need_weights_false": paired_ratio(rest, THIS_POLICY, ACT_NO_WEIGHTS),
        },
        "implied_delay": delay,
        "rtc_max_delay": max_delay,
        "rtc_max_delay_covers_it": delay <= max_delay,
        "runtime_settings": settings,
        "rollout_command": rollout_command(measurement["checkpoint"], measurement["device"], settings),
    }


def render_markdown(summary: dict[str, Any]) -> str:
    rows = [
        [
            name,
            *(summary["latency_ms"][name][f"p{q}_ms"] for q in (50, 95, 99)),
            summary["outside_backbone_p50_ms"][name],
        ]
        for name in VARIANTS
    ]
    ratios = summary["paired_ratio_median"]
    rest = summary["outside_backbone_paired_ratio_median"]
    covered = "covers it" if summary["rtc_max_delay_covers_it"] else "does NOT cover it"
    lines = [
        f"Latency of `{summary['checkpoint']}` on {summary['device']} ({summary['threads']} thread(s)), "
        f"{summary['iterations']} warm calls per variant after {summary['warmup']}, interleaved:",
        "",
        markdown_table(["variant", "p50 ms", "p95 ms", "p99 ms", "p50 ms outside backbone"], rows, digits=1),
        "",
        f"Time ratios (median over rounds of the ratio within a round): this policy / ACT "
        f"{ratios['this_policy_vs_act']:.3f}; ACT need_weights=False / ACT "
        f"{ratios['act_need_weights_false_vs_act']:.3f}; this policy / ACT need_weights=False "
        f"{ratios['this_policy_vs_act_need_weights_false']:.3f}. Outside the backbone: "
        f"{rest['this_policy_vs_act']:.3f}; {rest['act_need_weights_false_vs_act']:.3f}; "
        f"{rest['this_policy_vs_act_need_weights_false']:.3f}.",
        "",
        f"Implied delay at {summary['fps']} fps: ceil(p99 x fps) = {summary['implied_delay']} control steps; "
        f"rtc_max_delay={summary['rtc_max_delay']} {covered}.",
        "",
        "```bash",
        summary["rollout_command"],
        "```",
    ]
    if not summary["rtc_max_delay_covers_it"]:
        lines += [
            "",
            f"The policy conditions on at most {summary['rtc_max_delay']} committed actions; the rest of the "
            f"delay skips predicted actions. Use a faster device, or retrain with "
            f"--policy.rtc_max_delay={summary['implied_delay']}.",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="a pretrained_model folder, or a lerobot-train JSON config (random weights at its sizes)",
    )
    parser.add_argument("--fps", type=float, default=30.0, help="control rate of the robot (dataset fps)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per variant")
    parser.add_argument("--output-dir", type=Path, default=Path("latency_out"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    measurement = measure(args.checkpoint, args.device, args.warmup, args.iterations, args.threads)
    summary = summarize(measurement, args.fps)
    markdown = render_markdown(summary)
    write_report(args.output_dir, "latency", summary, markdown)
    print(markdown)
    print(f"\nWrote latency.json and latency.md to {args.output_dir}")


if __name__ == "__main__":
    main()
