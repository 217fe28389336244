"""Which served model a request names, and the model table's dispatch (pure: fake pipelines, no Ray or vLLM)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from llmd_ray.errors import ModelNotFoundError
from llmd_ray.frontdoor.models import ModelTable, ServedModel, resolve_name
from llmd_ray.topology.qos import QoSConfig

NAMES = ["tiny-llama", "tiny-llama-b"]
CLASSES = ["interactive", "standard", "batch"]


@pytest.mark.parametrize("model,index", [
    ("tiny-llama", 0), ("tiny-llama-b", 1), ("tiny-llama-b:batch", 1), ("tiny-llama:interactive", 0),
    (None, 0), ("", 0), (7, 0),  # omitted (vLLM serves its first model) or not a string (refused by the pipeline)
    ("code-complete", 0),  # a QoS alias selects a class of the default (first) model
])
def test_a_request_goes_to_the_model_it_names(model, index):
    assert resolve_name(NAMES, model, CLASSES, ["code-complete"]) == index


@pytest.mark.parametrize("model", ["gpt-9", "tiny-llama-c", "tiny-llama-b:nosuchclass", "tiny-llama-b:"])
def test_an_unknown_model_is_a_404_naming_every_served_model(model):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_name(NAMES, model, CLASSES, [])
    err = e.value
    assert err.status_code == 404 and err.param == "model" and err.code == "model_not_found"
    assert err.message.startswith(f"model '{model}' does not exist")
    assert "'tiny-llama'" in err.message and "'tiny-llama-b'" in err.message
    assert err.to_openai()["error"]["type"] == "not_found_error"


def test_an_adapter_goes_to_its_base_model():
    assert resolve_name(NAMES, "tiny-lora-1", CLASSES, [], [{"tiny-lora-0"}, {"tiny-lora-1"}]) == 1
    with pytest.raises(ModelNotFoundError):
        resolve_name(NAMES, "tiny-lora-2", CLASSES, [], [{"tiny-lora-0"}, {"tiny-lora-1"}])


def test_with_one_model_every_name_goes_to_it():
    """The pipeline's QoS selection answers a wrong name then, exactly as before multi-model."""
    assert resolve_name(["tiny-llama"], "gpt-9", CLASSES, []) == 0


class FakePipeline:
    def __init__(self, name):
        self.name, self.runs = name, []

    async def run(self, kind, body, caller):
        self.runs.append((kind, body))
        return self.name


class FakeModels:  # vLLM's OpenAIServingModels: one card per model
    def __init__(self, name):
        self.name = name

    async def show_available_models(self):
        from pydantic import BaseModel

        class Card(BaseModel):
            id: str
            root: str
            max_model_len: int

        class ModelList(BaseModel):
            object: str = "list"
            data: list[Card]

        return ModelList(data=[Card(id=self.name, root="/models/" + self.name, max_model_len=4096)])


class FakeDispatcher:
    def __init__(self, ready):
        self._ready = ready

    async def ready(self):
        return self._ready

    def status(self):
        return {"default": {"running": 1}}


def served(name, ready=True):
    return ServedModel(name, None, FakeDispatcher(ready), SimpleNamespace(status=lambda: {"in_flight": 0}),
                       SimpleNamespace(models=FakeModels(name)), FakePipeline(name))


def test_the_table_runs_the_named_models_pipeline():
    table = ModelTable([served("tiny-llama"), served("tiny-llama-b")], QoSConfig())
    body = {"model": "tiny-llama-b", "messages": []}
    assert asyncio.run(table.run("chat", body, None)) == "tiny-llama-b"
    assert asyncio.run(table.run("completion", {"prompt": "x"}, None)) == "tiny-llama"  # no model: the first
    assert table.models[1].pipeline.runs == [("chat", body)]
    with pytest.raises(ModelNotFoundError):
        asyncio.run(table.run("chat", {"model": "gpt-9"}, None))
    assert table.for_body(["not", "a", "dict"]).name == "tiny-llama"


def test_models_lists_every_served_model_as_vllm_does():
    table = ModelTable([served("tiny-llama"), served("tiny-llama-b")], QoSConfig())
    listed = asyncio.run(table.show_available_models()).model_dump()
    assert listed["object"] == "list"
    assert [(c["id"], c["root"], c["max_model_len"]) for c in listed["data"]] == [
        ("tiny-llama", "/models/tiny-llama", 4096), ("tiny-llama-b", "/models/tiny-llama-b", 4096)]


def test_ready_only_when_every_model_has_a_replica_and_status_per_model():
    assert asyncio.run(ModelTable([served("a"), served("b")], QoSConfig()).ready())
    table = ModelTable([served("a"), served("b", ready=False)], QoSConfig())
    assert not asyncio.run(table.ready())
    assert set(table.status()) == {"a", "b"} and table.status()["b"]["variants"] == {"default": {"running": 1}}


def test_names_must_be_unique_and_present():
    with pytest.raises(ValueError, match="unique"):
        ModelTable([served("a"), served("a")], QoSConfig())
    with pytest.raises(ValueError):
        ModelTable([], QoSConfig())
