"""KV blocks as data: what P/D (``llmd_ray.pd``) and the KV tiers (``llmd_ray.tiers``) both move.

Pure, unit-tested, no torch, vLLM or Ray import: which blocks of a prompt can
be moved (``plan``) and KV layouts with whole-block copies in numpy
(``layout``).
"""
