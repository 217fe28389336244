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
    │   ├── ModelNotFoundError       404: unknown ``model``
    │   └── RequestTooLargeError     413: the body exceeds the configured limit
    └── EngineError                  the serving side failed (5xx)
        ├── EngineDeadError          503: the engine process died; the replica restarts
        └── RequestAbortedError      503: the engine aborted the request (e.g. shutdown)
"""

from __future__ import annotations

__all__ = [
    "LLMDRayError",
    "ConfigError",
    "RequestError",
    "InvalidRequestError",
    "PromptTooLongError",
    "AuthenticationError",
    "ModelNotFoundError",
    "RequestTooLargeError",
    "EngineError",
    "EngineDeadError",
    "RequestAbortedError",
]


class LLMDRayError(Exception):
    """Base class of every error raised by llmd-ray."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __reduce__(self):  # keep param/code when pickled across Ray processes
        return (_rebuild, (type(self), self.message, self.param, self.code))

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


def _rebuild(cls, message, param, code):
    return cls(message, param=param, code=code)


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


class ModelNotFoundError(RequestError):
    status_code = 404
    error_type = "not_found_error"


class RequestTooLargeError(RequestError):
    status_code = 413


class EngineError(LLMDRayError):
    """The serving side failed to produce a result."""

    status_code = 503
    error_type = "service_unavailable"


class EngineDeadError(EngineError):
    """The vLLM engine process died."""


class RequestAbortedError(EngineError):
    """The engine aborted the request before it finished."""
