"""The front door: llmd-ray's OpenAI API, served by vLLM's own serving layer in the ingress.

Architecture (issue 14)::

    HTTP route / DeploymentHandle method          routes.py    (thin: auth, body, Reply -> response)
      -> ModelTable: the request's `model`        models.py    (each model: own frontend, gate, backend;
                                                                404 naming the served models)
      -> Pipeline.run                             pipeline.py  (one coroutine for both)
           prepare: vLLM's request model,         prepare.py   (400 naming the field; refusals; QoS class)
                    llmd-ray's limits
           admission: keys, rate, QoS gate        admission.py (flow-control permit, released once)
           vLLM's OpenAIServingChat/Completion    vllm_state.py (built by vLLM's init_app_state)
             chat template + tools, tokenize ONCE, SamplingParams, response models, tool/reasoning parsers
             -> RemoteEngineClient.generate       engine_client.py (vLLM's EngineClient protocol)
                  GenerateRequest{token ids, session id; sampling.vllm = SamplingParams + generate kwargs}
                  -> backend: router -> engine replica (variants, retries before the first token)
                     replica dead mid-stream: re-sent with the tokens streamed   migrating.py, migration.py
                  <- GenerateChunk.output = vLLM RequestOutput (deltas), prompt restored here
      <- vLLM's response body / SSE events, errors rewritten in llmd-ray's shape (errors.py)

Why the serving layer runs here, in the ingress, over an engine-client adapter, and not in the
replicas: routing needs token ids, so the prompt must be rendered and tokenized before a replica is
chosen; with vLLM's serving classes in the ingress that happens once, by vLLM's own code, and the
replica gets exactly what vLLM's API server hands its engine (token ids, ``SamplingParams``, the
``generate`` keywords). Running the serving layer in the replicas would tokenize twice (once to route,
once to serve) or re-implement vLLM's rendering in the ingress, and would put response formatting on
the engines' cores. The replica streams vLLM's ``RequestOutput`` deltas, so n > 1, logprobs and
prompt logprobs, finish and stop reasons and cached tokens arrive exactly as vLLM produced them; the
prompt's ids and text are not sent back with each delta. Every replica class (aggregated, P/D decode,
KV tiers) passes the request on unchanged; ``Engine.generate`` runs it (``engine/vllm_call.py``).

The same ``vllm serve`` command line (``config.vllm_cli_args``) configures the front door and the
parity test's reference vLLM server. What llmd-ray adds to vLLM's responses it adds (the ``x-llmd-qos``
and ``x-llmd-replica`` headers; auth, QoS and flow control in front; Serve's ``x-request-id`` is the id
vLLM's body carries); what it cannot honour (``prepare.UNHONOURED``) is a 400 naming the field. Error
bodies keep vLLM's status and message in llmd-ray's shape (``errors.py``). A top-level request field that
neither OpenAI nor vLLM declares is a 400 naming it too (``ingress.unknown_fields: ignore``: dropped, as
vLLM does).
"""

from llmd_ray.frontdoor.config import IngressConfig, OpenAIServerConfig, vllm_cli_args

__all__ = ["IngressConfig", "OpenAIServerConfig", "vllm_cli_args"]
