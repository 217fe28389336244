"""``KVTiersConfig``: which tier combinations are accepted, and errors that name the problem."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmd_ray.tiers.config import KVTiersConfig, with_pd


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, None),                                                     # the memory pool alone
        ({"memory_bytes": 0, "disk_dir": "/tmp/x"}, None),              # disk alone
        ({"memory_bytes": 8 << 20, "shared": True}, None),              # shared, staged through memory
        ({"memory_bytes": 0, "disk_dir": "/tmp/x", "shared": True}, None),
        ({"memory_bytes": 0}, "every tier is off"),
        ({"memory_bytes": 0, "shared": True}, "needs a local pool"),  # nothing to upload from
        ({"min_load_blocks": 0}, "min_load_blocks"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_tier_combinations(fields, error):
    if error is None:
        KVTiersConfig(**fields)
    else:
        with pytest.raises(ValidationError, match=error):
            KVTiersConfig(**fields)


def test_connector_config_and_pd_chain():
    cfg = KVTiersConfig(memory_bytes=1 << 20, min_load_blocks=2)
    tiers = cfg.connector_config(model="m", memory_dir="/m", staged_dir="/s", disk_dir=None, stats_dir="/t")
    extra = tiers["kv_connector_extra_config"]["llmd_tiers"]
    assert tiers["kv_connector"] == "TieredConnector" and extra["min_load_blocks"] == 2
    chained = with_pd({"kv_connector": "PD", "kv_load_failure_policy": "recompute"}, tiers)
    names = [c["kv_connector"] for c in chained["kv_connector_extra_config"]["connectors"]]
    assert chained["kv_connector"] == "MultiConnector" and names == ["PD", "TieredConnector"]  # P/D first


def test_shared_store_placed_by_custom_resources():
    from llmd_ray.serving.app import shared_kv_store

    def actor_options(**fields):
        app = shared_kv_store(KVTiersConfig(shared=True, **fields), None)
        return app._bound_deployment.ray_actor_options

    assert actor_options() == {"num_cpus": 0}  # anywhere
    assert actor_options(shared_store_resources={"node-head": 0.01}) == {"num_cpus": 0, "resources": {"node-head": 0.01}}
