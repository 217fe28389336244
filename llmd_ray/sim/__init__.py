"""A discrete-event SIMULATOR of an LLM serving fleet (labelled as such in every result it writes).

``Simulator`` (fleet.py) runs profiles-calibrated replicas (replica.py) behind
the real routing Scheduler and any autoscaling policy (policies.py), on the
benchmark harness's own workloads (workload.py). ``simulate_bench``
(validate.py) is the entry point for checking it against real runs.
"""

from llmd_ray.sim.validate import simulate_bench  # noqa: F401
