"""The closed-loop evidence study in MetaWorld (`act-rtc-alldelays-study`): settings, data, training,
evaluation, statistics, report and the runner, one module each; `runner` describes the study."""

from .cli import main

__all__ = ["main"]
