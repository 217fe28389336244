"""Analysis of the llmd router's decision traces (``llmd_ray.routing.trace``): where the routing gain is lost.

``python -m llmd_ray.bench.traces <dir-or-files> --out DIR [--requests requests.jsonl]`` (see bench/routing/README.md,
"Decision traces"): per-replica load over time, affinity verdicts over time, how many replicas each prefix group
was sent to, session affinity held on the busiest replica, predicted vs realised prefix hits, TTFT by verdict.
"""
