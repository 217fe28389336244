"""Model engines for llmd-ray (vLLM wrappers and the offline tiny test model).

Keep this module free of heavy imports: importing ``llmd_ray.engine`` must not
pull in vllm or torch.
"""
