"""Routing plugins, one per file; the registration list is ``llmd_ray.routing.registry``."""
