"""Request models under generated input: a body validates into engine-safe values or fails with a
ValidationError that names a field; nothing else escapes (pure: no Ray, no engine)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmd_ray.serving.protocol import ChatCompletionRequest, CompletionRequest, format_validation_error
from tests.component.test_fuzz_ingress import CHAT, CMPL

I64 = (-(2**63), 2**63 - 1)


def _check(model, body):
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        message, param = format_validation_error(e.errors(include_url=False))
        assert message
        return
    assert req.seed is None or I64[0] <= req.seed <= I64[1]  # torch generators take signed 64-bit seeds
    assert req.max_tokens is None or req.max_tokens >= 1
    assert 0.0 <= req.temperature <= 2.0 and 0.0 < req.top_p <= 1.0
    assert req.n == 1 and len(req.stop) <= 4 and all(req.stop)
    assert req.min_tokens >= 0


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.fixed_dictionaries({}, optional=CHAT))
def test_chat_bodies(body):
    _check(ChatCompletionRequest, body)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.fixed_dictionaries({}, optional=CMPL))
def test_completion_bodies(body):
    _check(CompletionRequest, body)
    if isinstance(body.get("prompt"), list) and body["prompt"] and all(isinstance(x, int) for x in body["prompt"]):
        try:
            assert CompletionRequest.model_validate(body).prompt == body["prompt"]
        except ValidationError:
            pass
