"""The front door's error translation (pure): every bad input is a 4xx whose ``param`` names the request field,
in llmd-ray's OpenAI-style body, whatever vLLM called it."""

from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from llmd_ray.errors import EngineError, InvalidRequestError, LLMDRayError, ModelNotFoundError
from llmd_ray.frontdoor.errors import clean_param, format_validation_error, from_vllm, sse_error


class Part(BaseModel):
    type: Literal["text"]
    text: str


class UserMessage(BaseModel):
    role: Literal["user"]
    content: str | list[Part]


class SystemMessage(BaseModel):
    role: Literal["system"]
    content: str


class Request(BaseModel):  # the shape of vLLM's request models: unions of message classes, validators
    messages: list[UserMessage | SystemMessage] = Field(min_length=1)
    max_tokens: int | None = None
    top_logprobs: int | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _check(cls, v):
        if v is not None and v > 20:
            raise ValueError("top_logprobs must be at most 20")
        return v


def _error(body: dict) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as e:
        Request.model_validate(body)
    return format_validation_error(e.value.errors(include_url=False), "messages")


@pytest.mark.parametrize("body,param", [
    ({}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}, "top_logprobs"),
])
def test_validation_errors_name_the_field_without_union_labels(body, param):
    message, got = _error(body)
    assert got == param
    assert message.startswith(param + ":") and "UserMessage" not in message.split(":")[0]


@pytest.mark.parametrize("loc,param", [
    ("body.messages.0.ChatCompletionDeveloperMessageParam.content", "messages[0].content"),
    (("body", "max_tokens"), "max_tokens"),
    ("input_tokens", "messages"),
    ("logit_bias", "logit_bias"),
    (("prompt", "function-wrap[__log_extra_fields__()]", 0), "prompt[0]"),
    (None, None),
])
def test_clean_param(loc, param):
    assert clean_param(loc, "messages") == param


@pytest.mark.parametrize("status,cls,etype", [
    (400, InvalidRequestError, "invalid_request_error"),
    (404, ModelNotFoundError, "not_found_error"),
    (503, EngineError, "service_unavailable"),
    (500, LLMDRayError, "internal_error"),
])
def test_vllm_error_bodies_keep_their_status_in_llmd_rays_shape(status, cls, etype):
    err = from_vllm({"error": {"message": "m", "type": "X", "param": "body.max_tokens", "code": status}}, "prompt")
    assert type(err) is cls and err.status_code == status
    body = err.to_openai()["error"]
    assert body == {"message": "max_tokens: m", "type": etype, "param": "max_tokens", "code": status}


def test_statuses_without_a_class_are_kept():
    err = from_vllm({"error": {"message": "cannot fetch image", "type": "Unprocessable", "param": None, "code": 422}})
    assert isinstance(err, InvalidRequestError) and err.status_code == 422


def test_a_paramless_prompt_error_names_the_prompt_field():
    err = from_vllm({"error": {"message": "Token id 1000000000 is out of vocabulary", "type": "BadRequestError",
                               "param": None, "code": 400}}, "prompt")
    assert err.param == "prompt" and err.message == "prompt: Token id 1000000000 is out of vocabulary"
    err = from_vllm({"error": {"message": "Streaming is not currently supported with beam search",
                               "type": "BadRequestError", "param": None, "code": 400}}, "prompt")
    assert err.param is None  # not a prompt problem: nothing is guessed


def test_sampling_params_checks_name_their_field():
    err = from_vllm({"error": {"message": "n must be 1 when using greedy sampling, got 2.",
                               "type": "BadRequestError", "param": None, "code": 400}}, "prompt")
    assert err.param == "n" and err.message == "n must be 1 when using greedy sampling, got 2."


def test_stream_error_events_are_rewritten_and_others_untouched():
    event = 'data: {"error": {"message": "too many", "type": "BadRequestError", "param": "logprobs", "code": 400}}\n\n'
    text, err = sse_error(event)
    assert isinstance(err, InvalidRequestError) and err.param == "logprobs"
    assert text == ('data: {"error":{"message":"logprobs: too many","type":"invalid_request_error",'
                    '"param":"logprobs","code":400}}\n\n')
    chunk = 'data: {"id":"x","choices":[]}\n\n'
    assert sse_error(chunk) == (chunk, None)
    assert sse_error("data: [DONE]\n\n") == ("data: [DONE]\n\n", None)
