"""`--policy.discover_packages_path=lerobot_policy_act_rtc_alldelays` works without the optional extras."""

import os
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter: `sys.modules[name] = None` makes `import name` raise ImportError, as if the
# metaworld and plots extras were not installed, before LeRobot or the plugin is imported.
SCRIPT = textwrap.dedent(
    """
    import sys

    for name in ("metaworld", "matplotlib"):
        sys.modules[name] = None

    from lerobot.configs.parser import load_plugin
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class

    load_plugin("lerobot_policy_act_rtc_alldelays")
    config_class = PreTrainedConfig.get_choice_class("act_relative_rtc_alldelays")
    policy_class = get_policy_class("act_relative_rtc_alldelays")
    print(config_class.__name__, policy_class.__name__)
    """
)


def test_lerobots_plugin_loader_registers_the_policy_without_metaworld_or_matplotlib():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.split()[-2:] == ["ACTRelativeRTCAllDelaysConfig", "ACTRelativeRTCAllDelaysPolicy"]
