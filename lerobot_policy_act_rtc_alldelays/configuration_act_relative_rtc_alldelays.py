"""Configuration of the registered policy type `act_relative_rtc_alldelays`."""

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig

from .config_checks import validate_delay_loss
from .configuration_act_relative_rtc import ACTRelativeRTCConfig


@PreTrainedConfig.register_subclass("act_relative_rtc_alldelays")
@dataclass
class ACTRelativeRTCAllDelaysConfig(ACTRelativeRTCConfig):
    """ACT relative-RTC trained on every inference delay of every sample in one forward pass.

    Args:
        rtc_train_all_delays: Evaluate all `rtc_max_delay + 1` delays per sample (backbone run once, the
            transformer on `batch * n_delays` sequences). False trains exactly like the base policy, one
            random delay per sample: the rollback switch and the A/B baseline.
        rtc_delay0_loss_share: Delay 0's share of the training loss, in [0, 1]; the other delays share the
            rest equally. 0.5 (the default) weights delay 0 as much as all the others together, whatever
            `rtc_max_delay` is: delay 0 trains the chunk plain chunking runs and a delay is measured from,
            and under a uniform share it gets 1 / (rtc_max_delay + 1) of the loss. null weights every delay
            equally, as checkpoints saved before this field existed were trained (they load with null).
        rtc_delay_loss_weights: The explicit override: one weight per delay `0..rtc_max_delay` (finite,
            non-negative, not all zero), normalized to mean 1. When set, `rtc_delay0_loss_share` is not
            used.
        rtc_delays_per_sample: K, the number of distinct delays trained per sample, drawn uniformly per
            sample and step (1..rtc_max_delay + 1). None: all of them. The transformer runs on batch * K
            sequences, so K bounds the step's cost where no image backbone dominates it.
    """

    rtc_train_all_delays: bool = True
    rtc_delay0_loss_share: float | None = 0.5
    rtc_delay_loss_weights: list[float] | None = None
    rtc_delays_per_sample: int | None = None

    @property
    def delays_per_sample(self) -> int:
        """K: `rtc_delays_per_sample`, or every delay."""
        return self.n_delays if self.rtc_delays_per_sample is None else self.rtc_delays_per_sample

    def _validate_fields(self) -> None:
        super()._validate_fields()
        validate_delay_loss(self)
