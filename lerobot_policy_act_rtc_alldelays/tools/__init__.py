"""Tools around the policy: benchmark, A/B comparison, datasets, MetaWorld closed loop, studies.

Neither `import lerobot_policy_act_rtc_alldelays` nor LeRobot's plugin loader imports this subpackage, so
the tools' optional dependencies (matplotlib, metaworld) are needed only by the console scripts using them.
"""
