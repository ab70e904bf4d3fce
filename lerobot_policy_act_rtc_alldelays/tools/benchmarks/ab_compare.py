"""A/B training comparison of the RTC training variants (off, on, shared), optionally against LeRobot's ACT.

The variants (`--variants`, default all three):
- off: one random delay per sample (`rtc_train_all_delays=false`), full attention. The baseline.
- on: every delay of every sample (`rtc_train_all_delays=true`), full attention: the batch is expanded to
  batch * n_delays sequences after the backbone.
- shared: every delay of every sample with `rtc_prefix_attention=shared_observation`: one packed sequence per
  sample under block masks, observation tokens blind to the prefix. Cheaper per step than on.

Every variant trains on the same local dataset with the same seed (so the same initial weights for the RTC
variants, which share their parameters, and the same data order for all), the same batch size and the same
number of steps. The last episodes are held out whole; every `--eval-every` steps the held-out L1 is measured
at every delay 0..rtc_max_delay, each variant with its own attention masks (those it uses at inference). The
summary compares every variant with off, and shared with on, at equal steps (the last step) and at equal
wall-clock training time, and repeats everything over several seeds: a difference smaller than the spread
over seeds counts as none.

How to read the numbers:
- The VAE is off (`use_vae=False`) so the loss is exactly the L1 and the held-out L1 is deterministic.
- The held-out L1 is in the policy's normalized relative-action space. LeRobot's ACT (`--with-act`) predicts
  normalized absolute actions: its L1 is on another scale and only reported in its own column.
- Training time excludes evaluation and includes data loading, which costs every variant the same.
- Normalization statistics come from the whole dataset, as lerobot-train computes them, for every variant.
- Wall-clock times are only comparable on a steadily loaded machine. On a shared CPU, run with
  OMP_NUM_THREADS=1: two multi-threaded processes on the same cores can slow each other's steps many-fold.
"""

import argparse
import csv
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline
from tqdm import tqdm

from ...configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from ...image_resize import PadToSquareResizeProcessorStep
from ..interleave import rotated
from ..policy_sizes import SMALL
from ..report import markdown_table, write_report
from ..synthetic_dataset import make_synthetic_dataset

# Variant name -> its config fields. They change the loss and the attention masks, never the parameters, so
# one seed gives every variant the same initial weights.
RTC_VARIANTS = {
    "off": dict(rtc_train_all_delays=False, rtc_prefix_attention="full"),
    "on": dict(rtc_train_all_delays=True, rtc_prefix_attention="full"),
    "shared": dict(rtc_train_all_delays=True, rtc_prefix_attention="shared_observation"),
}
VARIANT_DESCRIPTIONS = {
    "off": "one random delay per sample, full attention (the baseline)",
    "on": "all delays per sample, full attention (batch expansion)",
    "shared": "all delays per sample, shared_observation attention (one packed sequence per sample, "
    "observation tokens blind to the prefix)",
}
BASELINE = "off"
# (candidate, reference) pairs that get a verdict: every variant against the baseline, and shared against on,
# which isolates what the cheaper attention costs at the same all-delays training.
PAIRS = (("on", "off"), ("shared", "off"), ("shared", "on"))
COLORS = {"off": "tab:blue", "on": "tab:orange", "shared": "tab:green", "act": "tab:gray"}
EVAL_BATCH_SIZE = 64  # only speeds evaluation up: the held-out mean is weighted by batch size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset-root", type=Path, help="local LeRobotDataset; default: a synthetic one")
    data.add_argument("--repo-id", default="local/act_rtc_synthetic", help="the dataset's repo id")
    data.add_argument("--synthetic-episodes", type=int, default=24)
    data.add_argument("--synthetic-episode-length", type=int, default=80)
    data.add_argument("--holdout-episodes", type=int, default=4, help="the last N episodes are held out")
    run = parser.add_argument_group("training")
    run.add_argument("--steps", type=int, default=500)
    run.add_argument("--eval-every", type=int, default=50)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument(
        "--variants",
        nargs="+",
        choices=list(RTC_VARIANTS),
        default=list(RTC_VARIANTS),
        help=f"RTC variants to train; '{BASELINE}' is the baseline and must be included",
    )
    run.add_argument("--with-act", action="store_true", help="also train LeRobot's ACT (own loss scale)")
    run.add_argument("--num-workers", type=int, default=0)
    run.add_argument("--output-dir", type=Path, default=Path("ab_compare_out"))
    model = parser.add_argument_group("model (shared by every variant)")
    model.add_argument("--dim-model", type=int, default=SMALL["dim_model"])
    model.add_argument(
        "--n-layers", type=int, default=SMALL["n_encoder_layers"], help="encoder layers (the decoder has one)"
    )
    model.add_argument("--image-size", type=int, default=64, help="images are padded square and resized")
    model.add_argument("--chunk-size", type=int, default=8)
    model.add_argument("--rtc-max-delay", type=int, default=3)
    model.add_argument("--lr", type=float, default=1e-4, help="for the transformer and the backbone")
    args = parser.parse_args(argv)
    if BASELINE not in args.variants:
        parser.error(f"--variants must include '{BASELINE}': every other variant is compared with it")
    args.variants = [v for v in RTC_VARIANTS if v in args.variants]  # canonical order, no repeats
    if len(args.variants) < 2:
        parser.error(f"--variants needs a variant to compare with '{BASELINE}' (choose from on, shared)")
    return args


def policy_config(variant: str, args: argparse.Namespace) -> PreTrainedConfig:
    shared = dict(
        SMALL,
        device="cpu",
        push_to_hub=False,
        chunk_size=args.chunk_size,
        n_action_steps=args.chunk_size,
        dim_model=args.dim_model,
        dim_feedforward=4 * args.dim_model,
        n_encoder_layers=args.n_layers,
        optimizer_lr=args.lr,
        optimizer_lr_backbone=args.lr,
    )
    if variant == "act":
        return ACTConfig(**shared)
    return ACTRelativeRTCAllDelaysConfig(
        **shared,
        **RTC_VARIANTS[variant],
        rtc_max_delay=args.rtc_max_delay,
        downscale_img_square=args.image_size,
    )


def initial_policy(
    variant: str, seed: int, args: argparse.Namespace, meta: LeRobotDatasetMetadata
) -> PreTrainedPolicy:
    """The untrained policy of a variant. Seeding right before creation gives every RTC variant the same
    initial weights for a seed, so differences come from training alone."""
    cfg = policy_config(variant, args)
    torch.manual_seed(seed)
    return make_policy(cfg, ds_meta=meta)


def prepare_data(
    cfg: PreTrainedConfig, args: argparse.Namespace, meta: LeRobotDatasetMetadata, root: Path
) -> tuple[LeRobotDataset, PolicyProcessorPipeline, list[dict]]:
    """Training set, preprocessor and the preprocessed held-out batches (decoded once, reused every eval)."""
    pre, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    if isinstance(cfg, ACTConfig):
        # ACT has no resize step of its own: give it the same pixels as the RTC variants see.
        normalizer = next(i for i, s in enumerate(pre.steps) if isinstance(s, NormalizerProcessorStep))
        pre.steps.insert(
            normalizer, PadToSquareResizeProcessorStep(list(cfg.image_features), args.image_size)
        )
    n_train = meta.total_episodes - args.holdout_episodes
    delta = resolve_delta_timestamps(cfg, meta)

    def load(episodes: list[int]) -> LeRobotDataset:
        return LeRobotDataset(args.repo_id, root=root, episodes=episodes, delta_timestamps=delta)

    holdout = load(list(range(n_train, meta.total_episodes)))
    loader = torch.utils.data.DataLoader(holdout, batch_size=EVAL_BATCH_SIZE, num_workers=args.num_workers)
    return load(list(range(n_train))), pre, [pre(batch) for batch in loader]


@torch.no_grad()
def heldout_l1(policy: PreTrainedPolicy, batches: list[dict], delays: list[int] | None) -> list[float]:
    """Held-out L1 per delay (`delays=None`: ACT, one value), averaged over samples."""
    policy.eval()
    totals = np.zeros(1 if delays is None else len(delays))
    n_samples = 0
    for batch in batches:
        size = batch["action"].shape[0]
        n_samples += size
        if delays is None:
            totals[0] += policy.forward(batch)[1]["l1_loss"] * size
            continue
        for i, delay in enumerate(delays):
            fixed = torch.full((size,), delay, dtype=torch.long)
            totals[i] += policy.forward(batch, delays=fixed)[1]["l1_loss"] * size
    policy.train()
    return (totals / n_samples).tolist()


def forever(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def train_variant(
    variant: str,
    seed: int,
    args: argparse.Namespace,
    meta: LeRobotDatasetMetadata,
    root: Path,
    data_cache: dict,
) -> list[dict]:
    """Trains one variant from scratch; returns one CSV row per evaluation (step 0 included)."""
    policy = initial_policy(variant, seed, args, meta)
    cfg = policy.config
    kind = "act" if variant == "act" else "rtc"
    if kind not in data_cache:  # the RTC variants share their preprocessing: only the model differs
        data_cache[kind] = prepare_data(cfg, args, meta, root)
    train_set, pre, holdout = data_cache[kind]
    delays = None if kind == "act" else list(range(cfg.n_delays))
    optimizer_cfg = cfg.get_optimizer_preset()
    optimizer = optimizer_cfg.build(policy.get_optim_params())
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(seed),  # the same data order for every variant
    )
    batches = forever(loader)
    rows, seconds, losses = [], 0.0, []

    def record(step: int) -> None:
        l1 = heldout_l1(policy, holdout, delays)
        row = dict(seed=seed, variant=variant, step=step, seconds=seconds)
        row["train_loss"] = float(np.mean(losses)) if losses else float("nan")
        row["heldout_l1_mean"] = float(np.mean(l1))
        row["loss_space"] = "normalized absolute actions" if kind == "act" else "normalized relative actions"
        for d in range(args.rtc_max_delay + 1):
            row[f"heldout_l1_delay_{d}"] = "" if delays is None else l1[d]
        rows.append(row)
        losses.clear()
        bar.set_postfix(heldout_l1=f"{row['heldout_l1_mean']:.4f}")

    policy.train()
    with tqdm(total=args.steps, desc=f"seed {seed} {variant}", unit="step") as bar:
        record(0)
        for step in range(1, args.steps + 1):
            start = time.perf_counter()
            loss, _ = policy.forward(pre(next(batches)))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), optimizer_cfg.grad_clip_norm)
            optimizer.step()
            seconds += time.perf_counter() - start
            losses.append(loss.item())
            bar.update()
            if step % args.eval_every == 0 or step == args.steps:
                record(step)
    return rows


def verdict(candidate: str, reference: str, values: dict[str, np.ndarray]) -> str:
    """The rule: a mean difference no larger than the larger std over seeds is no difference."""
    ours, theirs = values[candidate], values[reference]
    if len(ours) < 2:
        return "undecided (one seed)"
    diff = ours.mean() - theirs.mean()
    if abs(diff) <= max(ours.std(ddof=1), theirs.std(ddof=1)):
        return "no difference (within spread)"
    return f"{candidate} better" if diff < 0 else f"{reference} better"


def spread(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def compared_pairs(variants: list[str]) -> list[tuple[str, str]]:
    return [(c, r) for c, r in PAIRS if c in variants and r in variants]


def summarize(rows: list[dict], args: argparse.Namespace, dataset_root: Path) -> dict:
    variants = args.variants + (["act"] if args.with_act else [])
    runs: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        runs.setdefault((row["seed"], row["variant"]), []).append(row)
    # Equal time: the budget is what the fastest RTC variant needed for all its steps, per seed; every variant
    # is read at its last evaluation at or before it.
    fastest = {s: min(args.variants, key=lambda v, s=s: runs[s, v][-1]["seconds"]) for s in args.seeds}
    budget = {s: runs[s, fastest[s]][-1]["seconds"] for s in args.seeds}
    picks = {
        "equal_steps": {key: run[-1] for key, run in runs.items()},
        "equal_time": {
            key: [r for r in run if r["seconds"] <= budget[key[0]]][-1] for key, run in runs.items()
        },
    }
    columns = [f"heldout_l1_delay_{d}" for d in range(args.rtc_max_delay + 1)] + ["heldout_l1_mean"]
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        # The root actually read: settings.dataset_root is None when the synthetic dataset is used.
        "dataset_root": str(dataset_root.resolve()),
        "dataset_synthetic": args.dataset_root is None,
        "variants": {v: VARIANT_DESCRIPTIONS[v] for v in args.variants},
        "seconds_per_step": {
            v: spread(np.array([runs[s, v][-1]["seconds"] / args.steps for s in args.seeds]))
            for v in variants
        },
        "equal_time_budget_seconds": budget,
        "equal_time_budget_variant": fastest,
        "verdict_rule": "per delay and pair (A vs B): 'no difference' if |mean(A) - mean(B)| <= "
        "max(std(A), std(B)) over seeds (sample std), else the lower held-out L1 is better",
    }
    for regime, pick in picks.items():
        table = {"steps": {v: [pick[s, v]["step"] for s in args.seeds] for v in variants}, "rows": {}}
        for col in columns:
            values = {v: np.array([pick[s, v][col] for s in args.seeds]) for v in args.variants}
            entry: dict = {v: spread(values[v]) for v in args.variants}
            pairs = compared_pairs(args.variants)
            entry["verdicts"] = {f"{c}_vs_{r}": verdict(c, r, values) for c, r in pairs}
            table["rows"][col.removeprefix("heldout_l1_")] = entry
        if args.with_act:
            table["act_heldout_l1"] = spread(
                np.array([pick[s, "act"]["heldout_l1_mean"] for s in args.seeds])
            )
        summary[regime] = table
    return summary


def markdown(summary: dict) -> str:
    """The summary as the markdown printed at the end and saved as ab_summary.md."""
    fmt = "{mean:.4f} ± {std:.4f}".format
    steps, timed = summary["equal_steps"], summary["equal_time"]
    variants = list(summary["variants"])
    pairs = compared_pairs(variants)
    per_step = ", ".join(f"{v} {fmt(**s)}" for v, s in summary["seconds_per_step"].items())
    budgets = ", ".join(
        f"seed {seed}: {summary['equal_time_budget_variant'][seed]} {t:.0f} s"
        for seed, t in summary["equal_time_budget_seconds"].items()
    )
    read_at = ", ".join(f"{v} at steps {timed['steps'][v]}" for v in variants)
    lines = [
        "## A/B: RTC training variants (held-out L1, normalized relative actions, lower is better)",
        "",
        *(f"- {v}: {text}" for v, text in summary["variants"].items()),
        "",
        f"Dataset: {summary['dataset_root']}{' (synthetic)' if summary['dataset_synthetic'] else ''}.",
        f"Seeds {summary['settings']['seeds']}, mean ± std over seeds. Seconds per step: {per_step}.",
        f"Equal steps: step {steps['steps'][BASELINE][0]}. Equal wall-clock: the budget is the training time "
        f"of the fastest variant, per seed ({budgets}); each variant is read at its last evaluation within "
        f"it ({read_at}).",
        f"Verdict rule: {summary['verdict_rule']}.",
    ]
    header = ["delay", *variants, *(f"{c} vs {r}" for c, r in pairs)]
    for title, table in (("Equal steps", steps), ("Equal wall-clock", timed)):
        cells = [
            [
                name.removeprefix("delay_") if name.startswith("delay_") else "mean over delays",
                *(fmt(**row[v]) for v in variants),
                *(row["verdicts"][f"{c}_vs_{r}"] for c, r in pairs),
            ]
            for name, row in table["rows"].items()
        ]
        lines += ["", f"### {title}", "", markdown_table(header, cells)]
    if "act_heldout_l1" in steps:
        lines += [
            "",
            "LeRobot ACT held-out L1, in normalized ABSOLUTE actions (another scale: not comparable with the "
            f"tables): equal steps {fmt(**steps['act_heldout_l1'])}, equal time "
            f"{fmt(**timed['act_heldout_l1'])} (steps {timed['steps']['act']}).",
        ]
    return "\n".join(lines) + "\n"


def short_verdict(text: str, candidate: str, reference: str) -> str:
    return {
        f"{candidate} better": "better",
        f"{reference} better": "worse",
        "no difference (within spread)": "≈",
        "undecided (one seed)": "?",
    }[text]


def loss_curves_figure(plt, rows: list[dict], summary: dict, x_name: str):
    """Held-out L1 and training loss against training steps (`x_name="step"`) or seconds."""
    seeds = summary["settings"]["seeds"]
    variants = list(summary["variants"])
    budget = float(np.mean(list(summary["equal_time_budget_seconds"].values())))

    def curves(variant: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps, seconds (mean over seeds: eval steps are shared, times differ) and values [seed, point]."""
        runs = [[r for r in rows if r["variant"] == variant and r["seed"] == s] for s in seeds]
        steps = np.array([r["step"] for r in runs[0]])
        seconds = np.array([[r["seconds"] for r in run] for run in runs]).mean(axis=0)
        return steps, seconds, np.array([[r[key] for r in run] for run in runs])

    panels = [
        ("heldout_l1_mean", "held-out L1, mean over delays", variants),
        ("train_loss", "train loss (running mean)", variants),
    ]
    if any(r["variant"] == "act" for r in rows):
        panels.append(("heldout_l1_mean", "LeRobot ACT held-out L1\n(absolute actions: own scale)", ["act"]))
    x_label = {"step": "training step", "seconds": "training seconds (eval excluded)"}[x_name]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, title, shown) in zip(axes[0], panels, strict=True):
        for variant in shown:
            steps, seconds, values = curves(variant, key)
            x = steps if x_name == "step" else seconds
            ax.plot(x, values.mean(axis=0), color=COLORS[variant], label=f"{variant} (mean)")
            # A light band: with three variants, darker ones hide each other where they overlap.
            ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=COLORS[variant], alpha=0.15)
        if x_name == "seconds":
            ax.axvline(budget, color="k", ls=":", label="equal-time budget")
        ax.set(title=title, xlabel=x_label)
        ax.legend(title="band: min-max over seeds", fontsize=8)
    fig.tight_layout()
    return fig


def heldout_figure(plt, summary: dict):
    """Held-out L1 per delay at equal steps and at equal wall-clock, with the pairwise verdicts."""
    variants = list(summary["variants"])
    budget = float(np.mean(list(summary["equal_time_budget_seconds"].values())))
    pairs = compared_pairs(variants)
    timed_steps = ", ".join(f"{v} {summary['equal_time']['steps'][v]}" for v in variants)
    titles = {
        "equal_steps": f"equal steps (step {summary['equal_steps']['steps'][BASELINE][0]})",
        "equal_time": f"equal wall-clock ({budget:.1f} s)\nsteps: {timed_steps}",
    }
    width = 0.8 / len(variants)
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.6), sharey=True)
    tops = []
    for ax, (regime, title) in zip(axes, titles.items(), strict=True):
        table = summary[regime]["rows"]
        x = np.arange(len(table))
        for k, variant in enumerate(variants):
            means = [entry[variant]["mean"] for entry in table.values()]
            stds = [entry[variant]["std"] for entry in table.values()]
            offset = (k - (len(variants) - 1) / 2) * width
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, color=COLORS[variant], label=variant)
        for i, entry in enumerate(table.values()):
            tops.append(max(entry[v]["mean"] + entry[v]["std"] for v in variants))
            # One short line per pair (full verdicts would overlap): the change of the mean, then the
            # verdict from the candidate's side.
            label = "\n".join(
                f"{c}/{r} {entry[c]['mean'] / entry[r]['mean'] - 1:+.1%} "
                + short_verdict(entry["verdicts"][f"{c}_vs_{r}"], c, r)
                for c, r in pairs
            )
            ax.text(i, tops[-1] * 1.02, label, ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(x, [n.replace("delay_", "delay ").replace("mean", "all delays") for n in table])
        ax.set(title=f"held-out L1 at {title}", ylabel="held-out L1 (relative actions)")
    axes[0].set_ylim(0, 1.35 * max(tops))  # room for the verdicts above both panels (they share y)
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="lower center",
        ncol=len(variants),
        title="error bar: std over seeds; text: A/B change of mean L1, verdict (≈: within spread)",
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig




def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    root = args.dataset_root
    if root is None:
        root = out / "synthetic_dataset"
        if not root.exists():  # reused across reruns into the same output dir
            make_synthetic_dataset(
                root, args.synthetic_episodes, args.synthetic_episode_length, seed=0, repo_id=args.repo_id
            )
    meta = LeRobotDatasetMetadata(args.repo_id, root=root)
    if not 0 < args.holdout_episodes < meta.total_episodes:
        raise ValueError(
            f"--holdout-episodes must be between 1 and {meta.total_episodes - 1} (the dataset has "
            f"{meta.total_episodes} episodes), got {args.holdout_episodes}."
        )
    rows, data_cache = [], {}
    for i, seed in enumerate(args.seeds):
        for variant in rotated(args.variants, i) + (["act"] if args.with_act else []):
            rows += train_variant(variant, seed, args, meta, root, data_cache)

    with open(out / "ab_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, args, root)
    text = markdown(summary)
    figures = {
        "ab_loss_vs_step": partial(loss_curves_figure, rows=rows, summary=summary, x_name="step"),
        "ab_loss_vs_seconds": partial(loss_curves_figure, rows=rows, summary=summary, x_name="seconds"),
        "ab_heldout_per_delay": partial(heldout_figure, summary=summary),
    }
    written = write_report(out, "ab_summary", summary, text, figures)
    print(text)
    print(f"Wrote {out / 'ab_results.csv'}, {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
