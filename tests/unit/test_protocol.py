"""Request validation: every bad input gets a message that names the field."""

import pytest
from pydantic import ValidationError

from llmd_ray.serving.protocol import ChatCompletionRequest, CompletionRequest, format_validation_error


def _error(model, body):
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    return format_validation_error(e.value.errors(include_url=False))


@pytest.mark.parametrize(
    "body,param,words",
    [
        ({}, "messages", "field required"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": "hi"}, "messages", "list"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", ""),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", ""),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens", "integer"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature", ""),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature", ""),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n", ""),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream", "boolean"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop", "at most 4"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}, "top_logprobs", ""),
    ],
)
def test_chat_errors_name_the_field(body, param, words):
    message, got_param = _error(ChatCompletionRequest, body)
    assert got_param == param
    assert message.startswith(param + ":")
    assert words in message


@pytest.mark.parametrize(
    "body,param",
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": "x", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "x", "logprobs": 50}, "logprobs"),
        ({"prompt": "x", "echo": True}, "echo"),
    ],
)
def test_completion_errors_name_the_field(body, param):
    _, got = _error(CompletionRequest, body)
    assert got == param


def test_valid_requests_and_defaults():
    c = CompletionRequest.model_validate({"prompt": ["only one"], "stop": "END", "extra_field": 1})
    assert c.prompt == "only one" and c.stop == ["END"] and c.max_tokens == 16
    ids = CompletionRequest.model_validate({"prompt": [[1, 2, 3]]})
    assert ids.prompt == [1, 2, 3]
    chat = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
         "max_completion_tokens": 7, "temperature": 0}
    )
    assert chat.messages[0].text() == "ab" and chat.output_limit == 7 and chat.max_tokens is None
    assert chat.stop == [] and chat.temperature == 0.0
