"""Configuration of the registered policy type `act_relative_rtc_alldelays`."""

import math
from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig

from .configuration_act_relative_rtc import ACTRelativeRTCConfig


@PreTrainedConfig.register_subclass("act_relative_rtc_alldelays")
@dataclass
class ACTRelativeRTCAllDelaysConfig(ACTRelativeRTCConfig):
    """ACT relative-RTC trained on every inference delay of every sample in one forward pass.

    Args:
        rtc_train_all_delays: Evaluate all `rtc_max_delay + 1` delays per sample (backbone run once, the
            transformer on `batch * n_delays` sequences). False trains exactly like the base policy, one
            random delay per sample: the rollback switch and the A/B baseline.
        rtc_delay_loss_weights: Optional weight of each delay `0..rtc_max_delay` in the loss (finite,
            non-negative, not all zero), normalized to mean 1. Default: uniform.
        rtc_delays_per_sample: K, the number of distinct delays trained per sample, drawn uniformly per
            sample and step (1..rtc_max_delay + 1). None: all of them. The transformer runs on batch * K
            sequences, so K bounds the step's cost where no image backbone dominates it.
    """

    rtc_train_all_delays: bool = True
    rtc_delay_loss_weights: list[float] | None = None
    rtc_delays_per_sample: int | None = None

    @property
    def delays_per_sample(self) -> int:
        """K: `rtc_delays_per_sample`, or every delay."""
        return self.n_delays if self.rtc_delays_per_sample is None else self.rtc_delays_per_sample

    def _validate_fields(self) -> None:
        super()._validate_fields()
        k = self.rtc_delays_per_sample
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n_delays):
            raise ValueError(
                "`rtc_delays_per_sample` must be an integer in 1..rtc_max_delay + 1 = "
                f"1..{self.n_delays} (the delays trained per sample), or null for all of them; got {k!r}."
            )
        weights = self.rtc_delay_loss_weights
        if weights is None:
            return
        if len(weights) != self.n_delays:
            raise ValueError(
                f"`rtc_delay_loss_weights` needs one weight per delay 0..rtc_max_delay, i.e. {self.n_delays} "
                f"numbers, got {len(weights)}: {list(weights)}."
            )
        if not all(math.isfinite(w) for w in weights):
            raise ValueError(
                f"`rtc_delay_loss_weights` must be finite numbers, got {list(weights)}: a NaN or inf weight "
                "makes every training loss NaN."
            )
        if any(w < 0 for w in weights):
            raise ValueError(f"`rtc_delay_loss_weights` must be non-negative, got {list(weights)}.")
        if sum(weights) == 0:
            raise ValueError(
                f"`rtc_delay_loss_weights` are all zero ({list(weights)}): at least one delay must be "
                "trained."
            )
