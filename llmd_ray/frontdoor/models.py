"""Several base models behind one front door: the model -> pipeline table (issue 14 item 3).

Each served model has what one model had before: its engine deployment(s)
behind their router (a ``VariantDispatcher``), its own vLLM frontend (its
tokenizer, ``VllmConfig`` and ``OpenAIServing*`` objects, ``vllm_state.py``),
its admission gate (flow control over its own replicas) and its pipeline.
:class:`ModelTable` picks the model a request names (``resolve``, pure) and
runs that model's pipeline, so routes call it as they would call one
``Pipeline``. ``/v1/models`` lists every served model as vLLM lists its one.

Model names, as vLLM's server and llmd-ray's QoS read them:

* the served name, ``<served name>:<class>`` (a QoS class), or one of its LoRA
  adapters (vLLM's ``OpenAIServingModels.lora_requests``) is that model;
* a QoS alias (``qos.model_aliases``), an omitted ``model`` or one that is not
  a string go to the first model listed: vLLM's server, given no ``model``,
  serves its first served name (``OpenAIServingModels.model_name()`` is
  ``base_model_paths[0]``), and a non-string is refused by its request model;
* anything else is a 404 naming the served models (vLLM: 404 ``NotFoundError``,
  "The model `x` does not exist."). With one model, the pipeline's QoS
  selection answers as before (same status, the served model named).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

from llmd_ray.errors import ModelNotFoundError


@dataclass(slots=True)
class ServedModel:
    """One base model's front door: its name, engine config, backend, gate, vLLM frontend and pipeline."""

    name: str
    engine: Any  # EngineConfig
    variants: Any  # VariantDispatcher: its engine deployment(s) through their router
    admission: Any  # Admission
    frontend: Any  # VllmFrontend
    pipeline: Any  # Pipeline


def resolve_name(names: Sequence[str], model: Any, classes: Sequence[str], aliases: Sequence[str],
                 adapters: Sequence[Container[str]] = ()) -> int:
    """Index of the served model a request's ``model`` names (pure): a served name, ``<name>:<class>``, or a
    LoRA adapter of that model (``adapters[i]``: model i's adapter names). Raises 404 naming the served models."""
    if len(names) == 1 or not isinstance(model, str) or not model or model in aliases:
        return 0  # vLLM serves its first model when none is named
    if model in names:
        return list(names).index(model)
    for i, names_i in enumerate(adapters):
        if model in names_i:
            return i
    base, sep, cls = model.rpartition(":")
    if sep and base in names and cls in classes:
        return list(names).index(base)
    served = ", ".join(f"'{n}'" for n in names)
    raise ModelNotFoundError(
        f"model '{model[:200]}' does not exist; this server serves {served} (each also as '<model>:<class>' "
        f"with a class of {sorted(classes)})", param="model", code="model_not_found")


class ModelTable:
    """The served models, first listed first; ``run`` has ``Pipeline.run``'s signature."""

    def __init__(self, models: Sequence[ServedModel], qos: Any):
        if not models:
            raise ValueError("no served models")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"served model names must be unique, got {names}")
        self.models = list(models)
        self.qos = qos

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def primary(self) -> ServedModel:
        return self.models[0]

    def __len__(self) -> int:
        return len(self.models)

    def resolve(self, model: Any) -> ServedModel:
        adapters = [getattr(m.frontend.models, "lora_requests", None) or {} for m in self.models]  # vLLM's, by name
        return self.models[resolve_name(self.names, model, list(self.qos.classes), list(self.qos.model_aliases),
                                        adapters)]

    def for_body(self, body: Any) -> ServedModel:
        return self.resolve(body.get("model") if isinstance(body, dict) else None)

    async def run(self, kind: str, body: Any, caller: Any) -> Any:
        return await self.for_body(body).pipeline.run(kind, body, caller)

    async def show_available_models(self) -> Any:
        """vLLM's ``ModelList`` with every served model's cards (each from its own frontend, as vLLM lists it)."""
        lists = [await m.frontend.models.show_available_models() for m in self.models]
        first = lists[0]
        return first.model_copy(update={"data": [card for ml in lists for card in ml.data]})

    async def ready(self) -> bool:
        """Every model has an engine replica that answers."""
        for m in self.models:
            if not await m.variants.ready():
                return False
        return True

    def status(self) -> dict[str, dict]:
        return {m.name: {**m.admission.status(), "variants": m.variants.status()} for m in self.models}


async def start_model(llm: Any, engine_config: Any, dispatch: dict | None, config: Any, qos: Any) -> ServedModel:
    """One model's front door: dispatcher over its engine deployment(s), gate, vLLM frontend, pipeline."""
    from llmd_ray.engine.config import EngineConfig
    from llmd_ray.engine.models import resolve_model
    from llmd_ray.frontdoor.admission import Admission
    from llmd_ray.frontdoor.pipeline import Pipeline
    from llmd_ray.frontdoor.vllm_state import start_frontend
    from llmd_ray.serving.dispatch import ingress_dispatcher

    engine = EngineConfig.model_validate(engine_config)
    variants = ingress_dispatcher(llm, dispatch)  # picks each request's variant; polls their replicas
    admission = Admission(config, qos, engine.name, lambda: variants.stats_handle().stats.remote(),
                          engine.max_num_seqs)
    frontend = await start_frontend(engine, resolve_model(engine.model), config.openai, variants)
    return ServedModel(engine.name, engine, variants, admission, frontend,
                       Pipeline(frontend, admission, config, qos, engine.name))
