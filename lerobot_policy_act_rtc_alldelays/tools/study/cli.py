"""The `act-rtc-alldelays-study` command line."""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..arguments import add_delays_argument
from ..metaworld.position import ACTION_SPACES
from ..metaworld.state import DEMO_CONDITIONS
from .evaluation import env_step_seconds
from .report import rewrite_report
from .runner import __doc__ as STUDY_DOC
from .runner import print_now, run_study
from .settings import TIME_REFERENCES, StudySettings, quick_settings
from .variants import DESCRIPTIONS, VARIANTS


def parse_args(argv: list[str] | None) -> StudySettings:
    defaults = StudySettings()
    parser = argparse.ArgumentParser(
        description=STUDY_DOC.splitlines()[0],
        epilog="variants: " + "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="a tiny, structurally complete run (< 1 min)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite summary.json/.md and the plots from the units (or episodes files) of --output-dir, "
        "and exit",
    )
    parser.add_argument(
        "--env-step-times",
        action="store_true",
        help="only measure the env step time with and without rendering (on the first task) and exit",
    )
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: results/<name>")
    parser.add_argument("--tasks", nargs="+", default=list(defaults.tasks))
    parser.add_argument("--demos", nargs="+", choices=DEMO_CONDITIONS, default=list(defaults.demos))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(defaults.variants))
    parser.add_argument("--actions", choices=ACTION_SPACES, default=defaults.actions,
                        help="position: absolute hand targets, as robot arms are driven; delta: MetaWorld's "
                        "end-effector deltas (what results/metaworld_state_study* ran)")
    add_delays_argument(parser, list(defaults.delays), "e.g. 0 4 8")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(defaults.train_seeds))
    parser.add_argument("--demo-episodes", type=int, default=defaults.demo_episodes)
    parser.add_argument("--steps", type=int, nargs="+", default=list(defaults.steps),
                        help="equal-steps training steps; several values: every variant is trained at each")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size)
    parser.add_argument("--n-action-steps", type=int, default=defaults.n_action_steps)
    parser.add_argument("--rtc-max-delay", type=int, default=defaults.rtc_max_delay)
    parser.add_argument("--episodes-per-seed", type=int, default=defaults.episodes_per_seed,
                        help="evaluation episodes per cell and training seed")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="episode step cap")
    parser.add_argument("--eval-seed", type=int, default=defaults.eval_seed)
    parser.add_argument("--no-equal-time", action="store_true", help="skip the equal wall-clock budget")
    parser.add_argument("--time-reference", choices=VARIANTS, default=None,
                        help="the variant whose time sets the equal wall-clock budget (default: the first of "
                        f"{list(TIME_REFERENCES)} in --variants)")
    parser.add_argument("--time-steps", type=int, default=None,
                        help="the steps of the reference's timed run (default: the first of --steps)")
    parser.add_argument("--workers", type=int, default=1, help="tasks run in parallel processes")
    args = parser.parse_args(argv)
    command = "act-rtc-alldelays-study " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        rewrite_report(args.output_dir or Path("results") / args.name)
        sys.exit(0)
    if args.env_step_times:
        for name, seconds in env_step_seconds(args.tasks[0]).items():
            print(f"{args.tasks[0]} {name} env: {seconds * 1000:.2f} ms per step")
        sys.exit(0)
    if args.quick:
        settings = quick_settings(args.output_dir or Path("results/quick"))
        return replace(settings, actions=args.actions, command=command.strip())
    return StudySettings(
        name=args.name,
        tasks=args.tasks,
        demos=args.demos,
        variants=[v for v in VARIANTS if v in args.variants],
        actions=args.actions,
        delays=sorted(set(args.delays)),
        train_seeds=args.train_seeds,
        demo_episodes=args.demo_episodes,
        steps=list(dict.fromkeys(args.steps)),
        batch_size=args.batch_size,
        lr=args.lr,
        chunk_size=args.chunk_size,
        n_action_steps=args.n_action_steps,
        rtc_max_delay=args.rtc_max_delay,
        episodes_per_seed=args.episodes_per_seed,
        max_steps=args.max_steps,
        eval_seed=args.eval_seed,
        equal_time=not args.no_equal_time,
        time_reference=args.time_reference,
        time_steps=args.time_steps,
        workers=args.workers,
        output_dir=args.output_dir or Path("results") / args.name,
        command=command.strip(),
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    run_study(settings, log=print_now)
    print(f"Wrote summary.json, summary.md, the units and PNG plots to {settings.output_dir}; the same "
          "command resumes the study")
