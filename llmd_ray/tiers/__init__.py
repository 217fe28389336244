"""KV cache tiers beyond each engine's own cache: a host-memory pool with disk spill per replica, and a
cluster-wide shared tier in the Ray object store.

* ``config``: ``KVTiersConfig``; ``connector``: the vLLM connector (imported by vLLM inside the engine);
* ``pool_files``/``lru``/``format``/``lookup``: the pure block-pool parts; ``metrics``: tier counters;
* ``shared_store``/``shared_index``: the shared tier's owner of object-store blocks;
* ``server``: the replica feature that stages shared-tier blocks and uploads new ones.
"""
