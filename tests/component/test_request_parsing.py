"""Request preparation on vLLM's own request models (imports vLLM, starts nothing): every bad body is an
InvalidRequestError naming the field; generated bodies either parse into requests whose SamplingParams vLLM
builds, or fail with an error vLLM answers with a 4xx; nothing else escapes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmd_ray.errors import InvalidRequestError
from llmd_ray.frontdoor.prepare import parse
from tests.component.test_fuzz_ingress import CHAT, CMPL

MSG = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("body,param", [
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": MSG, "max_tokens": "5x"}, "max_tokens"),
    ({"messages": MSG, "temperature": "hot"}, "temperature"),
    ({"messages": MSG, "stream": "maybe"}, "stream"),
    ({"messages": MSG, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": MSG, "kv_transfer_params": {"do_remote_prefill": True}}, "kv_transfer_params"),
])
def test_chat_errors_name_the_field(body, param):
    with pytest.raises(InvalidRequestError) as e:
        parse("chat", body)
    assert e.value.param == param and e.value.message.startswith(param), e.value.message


@pytest.mark.parametrize("body,param", [
    ({"prompt": 7}, "prompt"),
    ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "x", "logit_bias": "high"}, "logit_bias"),
    ({"prompt": "x", "echo": "sure"}, "echo"),
])
def test_completion_errors_name_the_field(body, param):
    with pytest.raises(InvalidRequestError) as e:
        parse("completion", body)
    assert e.value.param == param, e.value.message


def test_everything_vllm_knows_is_kept():
    req = parse("chat", {"messages": MSG, "n": 3, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2,
                         "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {"7": 3},
                         "stop_token_ids": [9], "min_tokens": 2, "ignore_eos": True, "seed": 3, "logprobs": True,
                         "top_logprobs": 2, "response_format": {"type": "json_object"}})
    params = req.to_sampling_params(16, {})
    assert (params.n, params.top_k, params.min_p, params.repetition_penalty) == (3, 5, 0.1, 1.2)
    assert (params.presence_penalty, params.frequency_penalty, params.seed) == (0.5, 0.5, 3)
    assert params.logit_bias == {7: 3.0} and params.stop_token_ids == [9] and params.min_tokens == 2
    assert params.ignore_eos and params.logprobs == 2 and params.structured_outputs.json_object


def _check(kind: str, body: dict) -> None:
    from vllm.exceptions import VLLMClientError

    try:
        req = parse(kind, body)
    except InvalidRequestError as e:
        assert e.message
        return
    try:
        req.to_sampling_params(16, {})
    except (ValueError, TypeError, OverflowError, VLLMClientError):
        pass  # vLLM answers these with 400, as the front door does


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.fixed_dictionaries({}, optional=CHAT))
def test_generated_chat_bodies(body):
    _check("chat", body)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.fixed_dictionaries({}, optional=CMPL))
def test_generated_completion_bodies(body):
    _check("completion", body)


# ------------------------------------------------------------------ unknown fields (ingress.unknown_fields)
VLLM_EXTENSIONS = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "structured_outputs": {"choice": ["a", "b"]},
                   "chat_template_kwargs": {"x": 1}, "add_generation_prompt": True, "skip_special_tokens": True,
                   "priority": 0, "request_id": "r1", "ignore_eos": False, "min_tokens": 1}


def test_an_unknown_field_is_a_400_naming_it_by_default():
    with pytest.raises(InvalidRequestError) as e:
        parse("chat", {"messages": MSG, "some_unknown_field": {"x": 1}})
    assert e.value.status_code == 400 and e.value.param == "some_unknown_field"
    assert e.value.message.startswith("some_unknown_field: unrecognized request argument")


def test_every_unknown_field_is_named():
    with pytest.raises(InvalidRequestError) as e:
        parse("completion", {"prompt": "x", "frobnicate": 1, "guided_json": {"type": "object"}})
    assert e.value.param == "frobnicate"  # the first; the message names them all
    assert "'frobnicate'" in e.value.message and "'guided_json'" in e.value.message


def test_vllm_extensions_and_openai_parameters_are_not_unknown():
    parse("chat", {"messages": MSG, **VLLM_EXTENSIONS})
    parse("chat", {"messages": MSG, "store": False, "metadata": {"a": "b"}, "parallel_tool_calls": True,
                   "stream": False, "user": "u"})  # OpenAI's own; vLLM ignores `store` and `metadata`
    parse("completion", {"prompt": "x", "best_of": 1, "suffix": None, "echo": False, "top_k": 3,
                         "prompt_logprobs": 1, "return_tokens_as_token_ids": True})


def test_ignore_behaves_as_vllm():
    """With ``unknown_fields: ignore`` the request parses as vLLM's server parses it (200 class): same fields."""
    body = {"messages": MSG, "some_unknown_field": {"x": 1}, "max_tokens": 3}
    ours = parse("chat", body, unknown_fields="ignore")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    theirs = ChatCompletionRequest.model_validate(body)
    assert ours.messages == theirs.messages and ours.max_tokens == theirs.max_tokens == 3
    assert str(ours.to_sampling_params(16, {})) == str(theirs.to_sampling_params(16, {}))


def test_the_pipeline_passes_the_ingress_setting():
    from llmd_ray.frontdoor.config import IngressConfig
    from llmd_ray.frontdoor.prepare import prepare
    from llmd_ray.topology.qos import QoSConfig

    assert IngressConfig().unknown_fields == "reject"
    body = {"messages": MSG, "frobnicate": 1}
    with pytest.raises(InvalidRequestError):
        prepare("chat", body, qos_config=QoSConfig(), served_model="m")
    assert prepare("chat", body, qos_config=QoSConfig(), served_model="m", unknown_fields="ignore").request
