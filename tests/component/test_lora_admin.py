"""The LoRA admin routes' gate, keys and request models (``frontdoor/lora.py``), and ``add_lora``'s checks,
over vLLM's own request models and a fake registry (no Ray, no engine)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from llmd_ray.errors import AuthenticationError
from llmd_ray.frontdoor.lora import admin, check_adapter, lora_config_of, with_stable_id


class FakeRequest:
    def __init__(self, body: dict, authorization: str | None = None):
        self._raw = json.dumps(body).encode()
        self.headers = {"authorization": authorization} if authorization else {}

    async def stream(self):
        yield self._raw


class FakeAdmission:
    def __init__(self, key: str | None):
        self.key = key

    def authenticate(self, authorization, rate_limited=True):
        if self.key is not None and authorization != f"Bearer {self.key}":
            raise AuthenticationError("invalid API key")


class FakeModels:
    def __init__(self):
        self.calls = []

    async def load_lora_adapter(self, request):
        self.calls.append(("load", request.lora_name, request.lora_path))
        return f"Success: LoRA adapter '{request.lora_name}' added successfully."

    async def unload_lora_adapter(self, request):
        self.calls.append(("unload", request.lora_name))
        return f"Success: LoRA adapter '{request.lora_name}' removed successfully."


def call(op, body, *, allowed=True, key=None, authorization=None):
    models = FakeModels()
    response = asyncio.run(admin(op, FakeRequest(body, authorization), models=models,
                                 admission=FakeAdmission(key), allowed=allowed, max_body_bytes=1 << 16))
    return response, models.calls


@pytest.mark.parametrize("op, body, kw, status, calls", [
    ("load", {"lora_name": "a", "lora_path": "/p"}, {"allowed": False}, 404, []),  # off: as an unknown route
    ("load", {"lora_name": "a", "lora_path": "/p"}, {}, 200, [("load", "a", "/p")]),
    ("unload", {"lora_name": "a"}, {}, 200, [("unload", "a")]),
    ("load", {"lora_name": "a"}, {}, 400, []),  # vLLM's model: lora_path is required
    ("load", {"lora_name": "a", "lora_path": "/p"}, {"key": "k"}, 401, []),  # keys on: no key, no load
    ("load", {"lora_name": "a", "lora_path": "/p"}, {"key": "k", "authorization": "Bearer x"}, 401, []),
    ("load", {"lora_name": "a", "lora_path": "/p"}, {"key": "k", "authorization": "Bearer k"}, 200,
     [("load", "a", "/p")]),
])
def test_admin_routes(op, body, kw, status, calls):
    response, made = call(op, body, **kw)
    assert response.status_code == status, response.body
    assert made == calls


def test_add_lora_checks_as_the_engine_would(tmp_path):
    from vllm.exceptions import LoRAAdapterNotFoundError
    from vllm.lora.request import LoRARequest

    from llmd_ray.engine.tiny_lora import build_tiny_lora

    config = lora_config_of(SimpleNamespace(enable_lora=True, max_lora_rank=8, max_loras=2))
    good = LoRARequest("a", 1, str(build_tiny_lora(0, tmp_path / "a")))
    check_adapter(good, config, 4096)
    with pytest.raises(LoRAAdapterNotFoundError):
        check_adapter(LoRARequest("b", 2, str(tmp_path / "missing")), config, 4096)
    with pytest.raises(ValueError, match="not enabled"):
        check_adapter(good, None, 4096)
    small = lora_config_of(SimpleNamespace(enable_lora=True, max_lora_rank=1, max_loras=1))
    with pytest.raises(ValueError):  # rank 8 > max_lora_rank
        check_adapter(good, small, 4096)
    assert lora_config_of(SimpleNamespace(enable_lora=False)) is None
    stable = with_stable_id(good)
    assert (stable.lora_name, stable.lora_path) == (good.lora_name, good.lora_path)
    assert stable.lora_int_id == with_stable_id(LoRARequest("a", 99, good.lora_path)).lora_int_id
