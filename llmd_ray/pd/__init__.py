"""P/D disaggregation: prefill and decode as variants with roles, the KV handed between them.

* ``servers``: the replica feature that orchestrates from the decode side (decide, remote prefill, import);
* ``decider``: split or prefill locally (prefix and cost policies), pure;
* ``handoff``: the handoff metadata and payload, pure; ``shm``: shared-memory buffers;
* ``connector``: the thin vLLM ``KVConnectorBase_V1`` adapter (imported only by vLLM inside the engine);
* ``engine``: the engine half (prefill with export params); ``metrics``: handoffs, bytes, fallbacks;
* ``config``: ``PDConfig`` (transport, decider, prefill timeout).
"""
