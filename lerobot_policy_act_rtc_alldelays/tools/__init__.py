"""Tools around the policy, grouped by role: `metaworld` (the MetaWorld env, demos, delay sweep and main
job), `benchmarks` (timing and the A/B comparison) and `study` (the closed-loop study); the modules at
this level are the helpers that several groups share (reports, datasets, continuity, policy sizes).

Neither `import lerobot_policy_act_rtc_alldelays` nor LeRobot's plugin loader imports this subpackage, so
the tools' optional dependencies (matplotlib, metaworld) are needed only by the console scripts using them.
"""
