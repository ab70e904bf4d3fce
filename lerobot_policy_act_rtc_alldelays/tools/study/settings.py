"""What a study runs: its settings, the variants, tasks and budgets, and the `--quick` settings."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..ab_compare import RTC_VARIANTS, VARIANT_DESCRIPTIONS
from ..metaworld_state import DEMO_CONDITIONS

VARIANTS = ("act", *RTC_VARIANTS)  # act, off, on, shared
DESCRIPTIONS = {"act": "LeRobot's ACT (plain chunking)", **VARIANT_DESCRIPTIONS}
BUDGET_REFERENCE = "off"  # equal wall-clock = the time this variant needs for the equal-steps run
TEMPORAL_ENSEMBLE = "temporal_ensemble"
# Both have a grasping phase and a placing or striking phase; hammer-v3 is where LeRobot's ACT lost most
# success to discard at delay 8 in a pre-study probe.
DEFAULT_TASKS = ("hammer-v3", "assembly-v3")
DEFAULT_EVAL_SEED = 100_000
DEMO_MAX_STEPS = 300  # the experts need at most ~270 steps on the candidate tasks


@dataclass
class StudySettings:
    name: str = "metaworld_state_study"
    tasks: Sequence[str] = DEFAULT_TASKS
    demos: Sequence[str] = DEMO_CONDITIONS
    variants: Sequence[str] = VARIANTS
    delays: Sequence[int] = (0, 4, 8)
    train_seeds: Sequence[int] = (0, 1, 2)
    demo_episodes: int = 40
    steps: int = 600
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
    workers: int = 1
    output_dir: Path = Path("results/metaworld_state_study")
    command: str = ""

    def check(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown variants {unknown}: choose among {list(VARIANTS)}.")
        if BUDGET_REFERENCE not in self.variants and self.equal_time:
            raise ValueError(
                f"The equal wall-clock budget is the time of '{BUDGET_REFERENCE}': include it in --variants "
                "or pass --no-equal-time."
            )
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
    """A structurally complete study in well under a minute: tiny data, steps and episode counts."""
    return StudySettings(
        name="quick",
        tasks=DEFAULT_TASKS[:1],
        delays=(0, 2),
        train_seeds=(0,),
        demo_episodes=2,
        steps=4,
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
