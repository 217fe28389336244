"""KV transfer for P/D disaggregation.

Pure, unit-tested parts (no torch, vLLM or Ray import): block planning
(``plan``), KV layouts and whole-block copies in numpy (``layout``), the
handoff metadata and payload (``handoff``), shared-memory buffers (``shm``)
and the split deciders (``decider``). ``connector`` is the thin vLLM
``KVConnectorBase_V1`` adapter, imported only by vLLM inside the engine.
"""
