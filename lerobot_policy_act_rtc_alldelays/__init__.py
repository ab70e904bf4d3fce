"""LeRobot policy plugin `act_relative_rtc_alldelays`.

Importing the package registers the policy type and its processor step with LeRobot; `lerobot-train`
and `lerobot-eval` import it through `register_third_party_plugins()`. The tools (benchmark, studies,
dataset writers) live in the `tools` subpackage, which this module does not import.
"""

from .configuration_act_relative_rtc import ACTRelativeRTCConfig
from .configuration_act_relative_rtc_alldelays import ACTRelativeRTCAllDelaysConfig
from .image_resize import PadToSquareResizeProcessorStep, pad_to_square_and_resize
from .modeling_act_relative_rtc import ACTRelativeRTC, ACTRelativeRTCPolicy
from .modeling_act_relative_rtc_alldelays import ACTRelativeRTCAllDelays, ACTRelativeRTCAllDelaysPolicy
from .processor_act_relative_rtc_alldelays import make_act_relative_rtc_alldelays_pre_post_processors

__version__ = "0.6.0"

__all__ = [
    "ACTRelativeRTC",
    "ACTRelativeRTCAllDelays",
    "ACTRelativeRTCAllDelaysConfig",
    "ACTRelativeRTCAllDelaysPolicy",
    "ACTRelativeRTCConfig",
    "ACTRelativeRTCPolicy",
    "PadToSquareResizeProcessorStep",
    "make_act_relative_rtc_alldelays_pre_post_processors",
    "pad_to_square_and_resize",
]
