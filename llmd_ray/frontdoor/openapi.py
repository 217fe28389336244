"""The ingress's OpenAPI schema and framework-level error bodies.

Chat and completion routes read their bodies raw (under a size limit) and
validate them with vLLM's request models, so the schema names those models
explicitly: request bodies, llmd-ray's headers, the error statuses and the
bearer scheme. Unknown paths and methods, and FastAPI's own validation
failures, get llmd-ray's OpenAI-style error body too.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmd_ray.errors import InvalidRequestError
from llmd_ray.frontdoor.errors import format_validation_error
from llmd_ray.serving.http_util import error_response

HEADERS = {"x-llmd-qos": "QoS class, e.g. interactive, standard, batch.",
           "x-session-id": "Session id for routing affinity."}
ROUTES = {"/v1/completions": "CompletionRequest", "/v1/chat/completions": "ChatCompletionRequest"}
ERROR_STATUSES = {
    "400": "Invalid request: the `param` field names the field at fault.",
    "401": "Missing or invalid API key (when keys are configured).",
    "403": "The API key may not use the requested QoS class.",
    "404": "Unknown model.",
    "413": "Request body above the configured limit.",
    "429": "Rate limit exceeded, or a sheddable request shed while saturated; see Retry-After.",
    "503": "No capacity within the QoS class's queue wait, or the engine failed; see Retry-After.",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "integer", "null"]}}}},
}


def _operation(model: str) -> dict:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    return {
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}},
        "parameters": [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}, "description": d}
                       for h, d in HEADERS.items()],
        "responses": {code: {"description": d, "content": error} for code, d in ERROR_STATUSES.items()},
        "security": [{}, {"bearer": []}],
    }


def schema(app: FastAPI) -> dict:
    """The OpenAPI document: FastAPI's, plus vLLM's request models for the routes that read raw bodies."""
    from llmd_ray.frontdoor.prepare import request_model

    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="llmd-ray's OpenAI-compatible API (vLLM's request and response models).")
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for path, name in ROUTES.items():
        model = request_model("chat" if "chat" in path else "completion")
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[name] = body
        op = doc.get("paths", {}).get(path, {}).get("post")
        if op is not None:
            op.update(_operation(name))
    schemas["ErrorResponse"] = ERROR_SCHEMA
    comps.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "API key, when the server has keys configured."}
    return doc


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = schema(app)
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        etype = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = {"error": {"message": str(exc.detail), "type": etype, "param": None, "code": exc.status_code}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = format_validation_error(list(exc.errors()))
        return error_response(InvalidRequestError(message, param=param))
