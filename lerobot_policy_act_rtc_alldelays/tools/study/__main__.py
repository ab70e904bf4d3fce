"""`python -m lerobot_policy_act_rtc_alldelays.tools.study`, the same as `act-rtc-alldelays-study`."""

from .cli import main

if __name__ == "__main__":
    main()
