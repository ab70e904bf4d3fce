"""The study's variants: named config overrides of this policy, plus LeRobot's ACT.

Every RTC variant except `default` pins each field that this round added, so its rows stay reproducible
when the shipped defaults change; `default` overrides nothing and runs the package's defaults of the day.
"""

from typing import Any

from ..ab_compare import RTC_VARIANTS, VARIANT_DESCRIPTIONS

ACT = "act"
DEFAULT = "default"

# The policy as it was before the state token and the prefix remedies existed.
BEFORE_REMEDIES: dict[str, Any] = dict(
    use_state_token=False, rtc_prefix_dropout=0.0, rtc_prefix_noise_std=0.0, rtc_delays_per_sample=None
)
STATE: dict[str, Any] = {**RTC_VARIANTS["on"], **BEFORE_REMEDIES, "use_state_token": True}

# Variant name -> (config overrides, description); the order is the order of the tables.
VARIANT_TABLE: dict[str, tuple[dict[str, Any], str]] = {
    ACT: ({}, "LeRobot's ACT (plain chunking)"),
    **{
        name: ({**fields, **BEFORE_REMEDIES}, f"{VARIANT_DESCRIPTIONS[name]}; as before the remedies")
        for name, fields in RTC_VARIANTS.items()
    },
    "state": (STATE, "on + the robot-state token"),
    "dropout": ({**STATE, "rtc_prefix_dropout": 0.5}, "state + half of the prefixes hidden by a mask token"),
    "noise": ({**STATE, "rtc_prefix_noise_std": 0.3}, "state + Gaussian noise (std 0.3) on the prefix"),
    "k2": ({**STATE, "rtc_delays_per_sample": 2}, "state + 2 delays drawn per sample"),
    "k3": ({**STATE, "rtc_delays_per_sample": 3}, "state + 3 delays drawn per sample"),
    "absolute": (
        {"predict_relative_actions": False},
        "the shipped defaults with absolute actions (`predict_relative_actions=false`)",
    ),
    DEFAULT: ({}, "the package's shipped config defaults, no overrides"),
}
VARIANTS = tuple(VARIANT_TABLE)
DESCRIPTIONS = {name: description for name, (_, description) in VARIANT_TABLE.items()}
DEFAULT_VARIANTS = (ACT, "absolute", DEFAULT)


def variant_overrides(name: str) -> dict[str, Any]:
    """The config fields that make an RTC variant; ValueError for an unknown name or LeRobot's ACT."""
    if name not in VARIANT_TABLE or name == ACT:
        raise ValueError(f"'{name}' is no RTC variant: choose among {list(VARIANTS[1:])}.")
    return dict(VARIANT_TABLE[name][0])
