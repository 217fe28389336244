"""The simulator routes through the Scheduler's array path (EndpointTable) with the same decisions."""

from llmd_ray.autoscaling.config import AutoscalerConfig
from llmd_ray.autoscaling.perf import load_profile
from llmd_ray.sim.fleet import Simulator
from llmd_ray.sim.workload import sim_jobs


def test_table_routing_matches_list_routing_in_the_simulator():
    prof = load_profile("h100-llama-3.1-8b")
    cfg = AutoscalerConfig.model_validate({"variants": [
        {"name": "h100", "accelerator": "H100", "profile": prof.name, "cost_per_hour": 3.0,
         "min_replicas": 80, "max_replicas": 80}], "qos": {"classes": {"default": {"priority": 1, "ttft_objective_s": 2.0, "itl_objective_s": 0.1}}, "default_class": "default"}})
    bench = {"seed": 0, "workload": {"type": "shared_prefix", "num_groups": 40, "prompts_per_group": 20,
                                     "system_prompt_len": 800, "question_len": 200, "output_len": 200},
             "load": {"process": "poisson", "rate": 600, "duration_s": 2}}
    runs = []
    for table_routing in (True, False):
        sim = Simulator(cfg, {prof.name: prof}, initial={"h100": 80}, block_size=16, table_routing=table_routing)
        res = sim.run(sim_jobs(bench), until=4)
        runs.append([(r.id, r.replica, r.first_token, r.finished) for r in res.requests])
    assert len(runs[0]) > 500 and len({r[1] for r in runs[0]}) >= 30  # spread over the fleet
    assert runs[0] == runs[1]
