import pickle

import pytest

import llmd_ray
from llmd_ray import errors

EXPECTED_ALL = [
    "__version__", "build_app", "AppArgs", "EngineConfig", "IngressConfig", "LLMServer", "OpenAIIngress",
    "Engine", "GenerateRequest", "GenerateChunk", "SamplingOptions", "LLMDRayError", "ConfigError",
    "RequestError", "InvalidRequestError", "PromptTooLongError", "AuthenticationError", "ModelNotFoundError",
    "RequestTooLargeError", "EngineError", "EngineDeadError", "RequestAbortedError",
    "PermissionDeniedError", "RateLimitError", "ServiceOverloadedError", "RequestShedError",
]


def test_public_api_is_pinned():
    assert llmd_ray.__all__ == EXPECTED_ALL


def test_every_public_error_is_in_the_tree_doc():
    for name in errors.__all__:
        assert name in errors.__doc__
        assert issubclass(getattr(errors, name), errors.LLMDRayError)


@pytest.mark.parametrize(
    "cls,status,etype",
    [
        (errors.InvalidRequestError, 400, "invalid_request_error"),
        (errors.PromptTooLongError, 400, "invalid_request_error"),
        (errors.AuthenticationError, 401, "authentication_error"),
        (errors.ModelNotFoundError, 404, "not_found_error"),
        (errors.RequestTooLargeError, 413, "invalid_request_error"),
        (errors.EngineDeadError, 503, "service_unavailable"),
        (errors.PermissionDeniedError, 403, "permission_error"),
        (errors.RateLimitError, 429, "rate_limit_error"),
        (errors.ServiceOverloadedError, 503, "service_unavailable"),
        (errors.RequestShedError, 429, "rate_limit_error"),
    ],
)
def test_openai_error_body(cls, status, etype):
    err = cls("bad thing", param="max_tokens")
    assert err.status_code == status
    assert err.to_openai() == {"error": {"message": "bad thing", "type": etype, "param": "max_tokens", "code": status}}


def test_errors_survive_pickling_with_param_and_code():
    err = pickle.loads(pickle.dumps(errors.ModelNotFoundError("nope", param="model", code="model_not_found")))
    assert type(err) is errors.ModelNotFoundError
    assert (err.message, err.param, err.code) == ("nope", "model", "model_not_found")


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        llmd_ray.does_not_exist


@pytest.mark.parametrize(
    "err,headers",
    [
        (errors.RateLimitError("slow down", retry_after_s=0.2), {"Retry-After": "1"}),
        (errors.RequestShedError("shed", retry_after_s=2.5), {"Retry-After": "3"}),
        (errors.ServiceOverloadedError("busy"), {}),
        (errors.AuthenticationError("no key"), {"WWW-Authenticate": "Bearer"}),
    ],
)
def test_error_headers(err, headers):
    assert err.headers() == headers


def test_retry_after_survives_pickling():
    err = pickle.loads(pickle.dumps(errors.RequestShedError("shed", code="request_shed", retry_after_s=2.0)))
    assert (type(err), err.code, err.retry_after_s) == (errors.RequestShedError, "request_shed", 2.0)
