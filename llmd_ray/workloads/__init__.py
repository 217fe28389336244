"""Workloads shared by the benchmark harness and the simulator (pure: no Ray, no tokenizer).

* ``spec``: the workload and load models (``RunSpec``: seed, workload, load);
* ``arrivals``: the seeded arrival schedule of a run;
* ``jobs``: the seeded jobs (turns, lengths, groups), built with any ``TextBuilder``.

``llmd_ray.bench`` sends these jobs to a server; ``llmd_ray.sim`` replays
them at token level. Neither package imports the other.
"""
