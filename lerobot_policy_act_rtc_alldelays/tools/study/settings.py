"""What a study runs: its settings, the variants, tasks and budgets, and the `--quick` settings."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..metaworld.position import ACTION_SPACES, check_action_space
from ..metaworld.state import DEMO_CONDITIONS
from .act_smooth import require_act_smooth
from .variants import ACT_SMOOTH_VARIANTS, DEFAULT, DEFAULT_VARIANTS, VARIANTS

# Equal wall-clock = the time the reference variant needs for the equal-steps run: the first of these in
# the study, unless `time_reference` names another.
TIME_REFERENCES = ("off", DEFAULT)
DEFAULT_DEMOS = ("unimodal", "noisy")
TEMPORAL_ENSEMBLE = "temporal_ensemble"
# LeRobot's ACT with plain chunking and this policy's default blending at the join.
ACT_BLEND_MODE = "blend"
# Picked by the position-target task scan (`task_scan`, results/position_task_scan): LeRobot's ACT reaches
# 80% at delay 0 there and loses most at delay 8.
DEFAULT_TASKS = ("sweep-v3", "handle-pull-v3")
DEFAULT_EVAL_SEED = 100_000
DEMO_MAX_STEPS = 300  # the experts need at most ~270 steps on the candidate tasks


@dataclass
class StudySettings:
    name: str = "metaworld_state_study"
    tasks: Sequence[str] = DEFAULT_TASKS
    demos: Sequence[str] = DEFAULT_DEMOS
    variants: Sequence[str] = DEFAULT_VARIANTS
    actions: str = ACTION_SPACES[0]  # position targets, as robot arms are driven
    delays: Sequence[int] = (0, 4, 8)
    train_seeds: Sequence[int] = (0, 1, 2)
    demo_episodes: int = 40
    steps: Sequence[int] = (600, 2000)  # equal-steps budgets: every variant is trained at each
    batch_size: int = 32
    lr: float = 2e-3
    chunk_size: int = 18
    n_action_steps: int = 9
    rtc_max_delay: int = 8
    episodes_per_seed: int = 34
    max_steps: int = 150
    eval_seed: int = DEFAULT_EVAL_SEED
    calibration_rounds: int = 5
    calibration_steps: int = 5
    equal_time: bool = True
    time_reference: str | None = None  # None: the first of TIME_REFERENCES among the variants
    time_steps: int | None = None  # the equal-steps budget whose time is shared; None: the first of steps
    workers: int = 1
    output_dir: Path = Path("results/metaworld_state_study")
    command: str = ""

    @property
    def reference(self) -> str | None:
        """The variant whose equal-steps time sets the equal wall-clock budget."""
        if self.time_reference is not None:
            return self.time_reference
        return next((v for v in TIME_REFERENCES if v in self.variants), None)

    @property
    def reference_steps(self) -> int:
        """The step count whose equal-steps time is the equal wall-clock budget."""
        return self.steps[0] if self.time_steps is None else self.time_steps

    def unit_settings(self) -> dict[str, Any]:
        """What a unit's result depends on besides its own labels (task, demos, variant, training seed,
        steps): a unit saved under other values is not reused. The lists that enumerate units, and the
        bookkeeping (name, command, output folder, workers), are left out, so a study can be extended."""
        enumerating = {"name", "tasks", "demos", "variants", "train_seeds", "steps", "equal_time",
                       "time_reference", "time_steps", "calibration_rounds", "calibration_steps",
                       "workers", "output_dir", "command"}
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if key not in enumerating
        }

    def check(self) -> None:
        check_action_space(self.actions)
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown variants {unknown}: choose among {list(VARIANTS)}.")
        if set(ACT_SMOOTH_VARIANTS) & set(self.variants):
            require_act_smooth()
            if self.actions != "position":
                raise ValueError(
                    "The act_smooth variants run under position targets only (their first committed action "
                    f"holds the hand where it is), got --actions {self.actions}. Pass --actions position or "
                    "leave them out of --variants."
                )
        if self.equal_time and self.reference not in self.variants:
            raise ValueError(
                f"The equal wall-clock budget is the time of a reference variant ({self.reference or 'none'}"
                f" here, by default the first of {list(TIME_REFERENCES)} in --variants): include it in "
                "--variants, choose one with --time-reference, or pass --no-equal-time."
            )
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"--steps needs positive step counts, got {list(self.steps)}.")
        unknown = sorted(set(self.demos) - set(DEMO_CONDITIONS))
        if unknown:
            raise ValueError(f"Unknown demo conditions {unknown}: choose among {list(DEMO_CONDITIONS)}.")
        largest = max(self.delays)
        if largest > self.rtc_max_delay:
            raise ValueError(
                f"Delays {list(self.delays)} exceed rtc_max_delay={self.rtc_max_delay}: prefix mode is only "
                "trained up to rtc_max_delay. Raise --rtc-max-delay or drop the larger delays."
            )
        if largest + self.n_action_steps > self.chunk_size or largest >= self.n_action_steps:
            raise ValueError(
                f"Discard mode at delay {largest} needs delay + n_action_steps <= chunk_size and "
                f"delay < n_action_steps, got n_action_steps={self.n_action_steps}, "
                f"chunk_size={self.chunk_size}. Raise --chunk-size or lower the delays."
            )


def quick_settings(output_dir: Path) -> StudySettings:
    """A structurally complete study in about a minute: tiny data, steps and episode counts; every path of
    a full run (noisy demos, a remedy variant, the defaults as time reference, a budget scan, the
    diagnostic)."""
    return StudySettings(
        name="quick",
        tasks=("hammer-v3",),
        demos=("noisy",),
        variants=("act", "dropout", DEFAULT),
        delays=(0, 2),
        train_seeds=(0,),
        demo_episodes=2,
        steps=(4, 8),
        batch_size=8,
        chunk_size=8,
        n_action_steps=4,
        rtc_max_delay=2,
        episodes_per_seed=2,
        max_steps=12,
        calibration_rounds=1,
        calibration_steps=1,
        output_dir=output_dir,
    )
