"""Variant autoscaling: the cheapest mix of role x hardware variants that meets the SLOs.

Modules: ``config`` (pydantic boundary), ``perf`` (profiles), ``capacity``
(per-replica capacity within SLO), ``demand`` (recorder + estimator),
``optimizer`` (the HiGHS MILP), ``hysteresis``, ``autoscaler`` (the decision
step, Ray-free), ``policy`` (the Ray Serve application-level policy) and
``profile`` (``python -m llmd_ray.autoscaling.profile``). Nothing is imported
here, so replicas can import ``demand`` without pulling in scipy.
"""
