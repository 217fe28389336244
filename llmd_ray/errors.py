"""The exception tree of llmd-ray.

Every error the package raises on purpose derives from :class:`LLMDRayError`.
Errors caused by the caller are :class:`RequestError` subclasses; each carries
the HTTP status it maps to, the OpenAI error ``type`` and the request field
(``param``) at fault, so the ingress turns them into OpenAI-style JSON bodies::

    LLMDRayError
    ├── ConfigError                  bad deployment / engine / app configuration
    ├── RequestError                 the request is at fault (4xx)
    │   ├── InvalidRequestError      400: a field is missing, of the wrong type or out of range
    │   │   └── PromptTooLongError   400: prompt (+ max_tokens) exceeds max_model_len
    │   ├── AuthenticationError      401: missing or wrong API key
    │   ├── PermissionDeniedError    403: the API key may not use the requested QoS class
    │   ├── ModelNotFoundError       404: unknown ``model``
    │   ├── RequestTooLargeError     413: the body exceeds the configured limit
    │   └── RateLimitError           429: the API key's request rate is exceeded (Retry-After)
    ├── ServiceOverloadedError       503: flow control found no capacity within the class's queue wait
    │   └── RequestShedError         429: flow control shed a sheddable request (saturated; Retry-After)
    └── EngineError                  the serving side failed (5xx)
        ├── EngineDeadError          503: the engine process died; the replica restarts
        └── RequestAbortedError      503: the engine aborted the request (e.g. shutdown)
"""

from __future__ import annotations

import math

__all__ = [
    "LLMDRayError",
    "ConfigError",
    "RequestError",
    "InvalidRequestError",
    "PromptTooLongError",
    "AuthenticationError",
    "PermissionDeniedError",
    "ModelNotFoundError",
    "RequestTooLargeError",
    "RateLimitError",
    "ServiceOverloadedError",
    "RequestShedError",
    "EngineError",
    "EngineDeadError",
    "RequestAbortedError",
]


class LLMDRayError(Exception):
    """Base class of every error raised by llmd-ray."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: float | None = None
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s  # sent as a Retry-After header (whole seconds, at least 1)

    def __reduce__(self):  # keep param/code/retry_after_s when pickled across Ray processes
        return (_rebuild, (type(self), self.message, self.param, self.code, self.retry_after_s))

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the error response."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}

    def to_openai(self) -> dict:
        """The OpenAI-style error body: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code if self.code is not None else self.status_code,
            }
        }


def _rebuild(cls, message, param, code, retry_after_s=None):
    return cls(message, param=param, code=code, retry_after_s=retry_after_s)


class ConfigError(LLMDRayError, ValueError):
    """A configuration value is invalid; the message names the field."""

    error_type = "config_error"


class RequestError(LLMDRayError):
    """The request is at fault; answered with a 4xx status."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequestError(RequestError, ValueError):
    """A request field is missing, of the wrong type, or out of range."""


class PromptTooLongError(InvalidRequestError):
    """The prompt, or prompt plus ``max_tokens``, exceeds the model's context."""


class AuthenticationError(RequestError):
    status_code = 401
    error_type = "authentication_error"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": "Bearer"}


class PermissionDeniedError(RequestError):
    """The API key is valid but may not do this (e.g. ask for a higher QoS class)."""

    status_code = 403
    error_type = "permission_error"


class ModelNotFoundError(RequestError):
    status_code = 404
    error_type = "not_found_error"


class RequestTooLargeError(RequestError):
    status_code = 413


class RateLimitError(RequestError):
    """The API key sent requests faster than its rate limit; retry after ``retry_after_s``."""

    status_code = 429
    error_type = "rate_limit_error"


class ServiceOverloadedError(LLMDRayError):
    """Flow control found no capacity for the request within its QoS class's maximum queue wait."""

    status_code = 503
    error_type = "service_unavailable"


class RequestShedError(ServiceOverloadedError):
    """Flow control shed a sheddable request because the replicas are saturated."""

    status_code = 429
    error_type = "rate_limit_error"


class EngineError(LLMDRayError):
    """The serving side failed to produce a result."""

    status_code = 503
    error_type = "service_unavailable"


class EngineDeadError(EngineError):
    """The vLLM engine process died."""


class RequestAbortedError(EngineError):
    """The engine aborted the request before it finished."""
