"""Optional API keys at the ingress (pure; no Ray import).

Keys come from a file (e.g. a mounted Kubernetes Secret), an environment
variable (e.g. one set from a Secret), or inline config (tests). Each key has
a ``name`` (the tenant: it is what metrics, fairness and logs see; the key
itself is never logged), an optional QoS class and an optional rate limit.
Keys are kept only as SHA-256 digests and compared with
``hmac.compare_digest`` against every configured digest, with no early exit,
so timing says nothing about which key, or which prefix, matched.

File / environment formats: a YAML or JSON list of :class:`APIKey` mappings
(``[{name: team-a, key: sk-..., qos_class: interactive, rate_limit_rps: 5}]``),
or, for the environment only, comma-separated plain keys (named ``key-1``, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from llmd_ray.errors import AuthenticationError, ConfigError, RateLimitError


class APIKey(BaseModel):
    """One API key: its tenant name, class and rate limit."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Tenant name; logged and used in metrics instead of the key.")
    key: SecretStr | None = Field(default=None, description="The key in plain text.")
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", description="Or: the key's SHA-256, hex.")
    qos_class: str | None = Field(default=None, description="Default QoS class of this key, and the highest it may ask for.")
    rate_limit_rps: float | None = Field(default=None, gt=0, description="Requests per second (token bucket); None: the default.")
    burst: int | None = Field(default=None, ge=1, description="Bucket size; default max(1, ceil(rate_limit_rps)).")

    @model_validator(mode="after")
    def _one_key(self) -> "APIKey":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("exactly one of key / key_sha256 is required")
        if self.key is not None and len(self.key.get_secret_value()) < 8:
            raise ValueError("key: at least 8 characters")
        return self

    def digest(self) -> bytes:
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        return hashlib.sha256(self.key.get_secret_value().encode()).digest()


class AuthConfig(BaseModel):
    """API keys (``ingress.auth``); authentication is on when any key source is set."""

    model_config = ConfigDict(extra="forbid")

    api_keys_file: str | None = Field(default=None, description="YAML/JSON list of keys, e.g. a mounted Secret.")
    api_keys_env: str | None = Field(default=None, description="Environment variable holding the keys (YAML/JSON list or comma-separated).")
    api_keys: list[APIKey] = Field(default_factory=list, description="Inline keys (tests; prefer the file or the environment).")
    default_rate_limit_rps: float | None = Field(default=None, gt=0, description="Rate limit of keys that set none; None: unlimited.")

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys_file or self.api_keys_env or self.api_keys)


def _parse_keys(text: str, source: str, allow_plain: bool) -> list[APIKey]:
    text = text.strip()
    if allow_plain and text and text[0] not in "[{-" and "\n" not in text:
        return [APIKey(name=f"key-{i + 1}", key=k.strip()) for i, k in enumerate(text.split(",")) if k.strip()]
    try:
        items = yaml.safe_load(text)
        if not isinstance(items, list):
            raise ValueError("expected a list of keys")
        return [APIKey.model_validate(x) for x in items]
    except (ValueError, yaml.YAMLError, ValidationError) as e:  # the message never quotes key material
        raise ConfigError(f"{source}: invalid API key list ({type(e).__name__})") from None


@dataclass(slots=True)
class Principal:
    """The authenticated caller."""

    name: str
    qos_class: str | None = None


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyStore:
    """Authenticates bearer tokens and applies per-key rate limits."""

    def __init__(self, keys: list[APIKey], default_rps: float | None = None, clock: Callable[[], float] = time.monotonic):
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ConfigError("auth: API key names must be unique")
        self._entries = [(k.digest(), Principal(k.name, k.qos_class)) for k in keys]
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        now = clock()
        for k in keys:
            rps = k.rate_limit_rps or default_rps
            if rps is not None:
                burst = float(k.burst or max(1, math.ceil(rps)))
                self._buckets[k.name] = TokenBucket(rps, burst, burst, now)

    @classmethod
    def from_config(cls, cfg: AuthConfig, environ: dict[str, str] | None = None) -> "KeyStore | None":
        """The configured keys; None when authentication is off. A configured but empty source fails."""
        if not cfg.enabled:
            return None
        env = os.environ if environ is None else environ
        keys = list(cfg.api_keys)
        if cfg.api_keys_file:
            path = Path(cfg.api_keys_file)
            if not path.is_file():
                raise ConfigError(f"auth.api_keys_file: {path} does not exist")
            keys += _parse_keys(path.read_text(), "auth.api_keys_file", allow_plain=False)
        if cfg.api_keys_env:
            if not env.get(cfg.api_keys_env, "").strip():
                raise ConfigError(f"auth.api_keys_env: environment variable {cfg.api_keys_env} is unset or empty")
            keys += _parse_keys(env[cfg.api_keys_env], "auth.api_keys_env", allow_plain=True)
        if not keys:
            raise ConfigError("auth: a key source is configured but holds no keys")
        return cls(keys, cfg.default_rate_limit_rps)

    @property
    def classes(self) -> set[str]:
        return {p.qos_class for _, p in self._entries if p.qos_class}

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization: Bearer <key>`` header; AuthenticationError (401) otherwise."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for d, principal in self._entries:  # every entry, no early exit
            if hmac.compare_digest(d, digest):
                found = principal
        if found is None:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        return found

    def check_rate(self, principal: Principal) -> None:
        """RateLimitError (429, with Retry-After) when the key is over its rate."""
        bucket = self._buckets.get(principal.name)
        if bucket is None:
            return
        wait = bucket.take(self.clock())
        if wait > 0:
            raise RateLimitError(
                f"rate limit of {bucket.rate:g} requests/s exceeded for API key '{principal.name}'; "
                f"retry in {wait:.2f} s",
                code="rate_limit_exceeded",
                retry_after_s=wait,
            )
