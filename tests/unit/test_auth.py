"""API keys: loading from file / environment / inline, bearer authentication, per-key rate limits."""

import hashlib
import json

import pytest

from llmd_ray.errors import AuthenticationError, ConfigError, RateLimitError
from llmd_ray.serving.auth import APIKey, AuthConfig, KeyStore, TokenBucket


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


KEYS = [
    APIKey(name="team-a", key="sk-alpha-0001", qos_class="interactive", rate_limit_rps=2, burst=2),
    APIKey(name="team-b", key_sha256=hashlib.sha256(b"sk-bravo-0002").hexdigest()),
]

AUTH = [
    (None, AuthenticationError, "missing_api_key"),
    ("", AuthenticationError, "missing_api_key"),
    ("sk-alpha-0001", AuthenticationError, "missing_api_key"),  # no scheme
    ("Basic sk-alpha-0001", AuthenticationError, "missing_api_key"),
    ("Bearer ", AuthenticationError, "missing_api_key"),
    ("Bearer sk-alpha-0002", AuthenticationError, "invalid_api_key"),
    ("Bearer sk-alpha-000", AuthenticationError, "invalid_api_key"),  # a prefix is not a key
    ("Bearer \udcff", AuthenticationError, "invalid_api_key"),
    ("Bearer sk-alpha-0001", "team-a", None),
    ("bearer   sk-alpha-0001  ", "team-a", None),
    ("Bearer sk-bravo-0002", "team-b", None),
]


@pytest.mark.parametrize("header,expected,code", AUTH)
def test_authenticate(header, expected, code):
    store = KeyStore(KEYS)
    if isinstance(expected, str):
        assert store.authenticate(header).name == expected
    else:
        with pytest.raises(expected) as info:
            store.authenticate(header)
        assert info.value.status_code == 401 and info.value.code == code
        assert "sk-" not in info.value.message  # never echo key material


def test_keys_are_kept_as_digests_only():
    store = KeyStore(KEYS)
    assert all(len(d) == 32 for d, _ in store._entries)
    assert "sk-alpha" not in repr(KEYS[0]) and "sk-alpha" not in str(store.__dict__)


def test_rate_limit_token_bucket():
    clock = Clock()
    store = KeyStore(KEYS, clock=clock)
    a = store.authenticate("Bearer sk-alpha-0001")
    store.check_rate(a)
    store.check_rate(a)  # burst of 2
    with pytest.raises(RateLimitError) as info:
        store.check_rate(a)
    assert info.value.status_code == 429 and info.value.headers() == {"Retry-After": "1"}
    assert info.value.retry_after_s == pytest.approx(0.5)
    clock.t = 0.5
    store.check_rate(a)  # refilled one token at 2/s
    b = store.authenticate("Bearer sk-bravo-0002")
    for _ in range(100):
        store.check_rate(b)  # no limit


BUCKET = [
    # (rate, burst, take times, results: True = allowed)
    (1.0, 1, [0.0, 0.1, 1.0, 1.5, 2.1], [True, False, True, False, True]),
    (10.0, 3, [0.0, 0.0, 0.0, 0.0, 0.1], [True, True, True, False, True]),
    (0.5, 2, [0.0, 0.0, 0.0, 2.0, 2.0], [True, True, False, True, False]),
]


@pytest.mark.parametrize("rate,burst,times,allowed", BUCKET)
def test_token_bucket(rate, burst, times, allowed):
    b = TokenBucket(rate, burst, burst, 0.0)
    assert [b.take(t) == 0.0 for t in times] == allowed


def test_default_rate_limit_applies_to_keys_without_one():
    clock = Clock()
    store = KeyStore([APIKey(name="x", key="sk-xxxxxxxx")], default_rps=1.0, clock=clock)
    p = store.authenticate("Bearer sk-xxxxxxxx")
    store.check_rate(p)
    with pytest.raises(RateLimitError):
        store.check_rate(p)


def test_keys_from_file_and_env(tmp_path):
    f = tmp_path / "keys.yaml"
    f.write_text(json.dumps([{"name": "file-key", "key": "sk-from-file", "qos_class": "batch"}]))
    cfg = AuthConfig(api_keys_file=str(f), api_keys_env="LLMD_KEYS")
    store = KeyStore.from_config(cfg, environ={"LLMD_KEYS": "sk-env-one1, sk-env-two2"})
    assert store.authenticate("Bearer sk-from-file").qos_class == "batch"
    assert store.authenticate("Bearer sk-env-two2").name == "key-2"
    assert store.classes == {"batch"}


def test_env_yaml_list():
    cfg = AuthConfig(api_keys_env="K")
    store = KeyStore.from_config(cfg, environ={"K": "- {name: y, key: sk-yyyyyyyy, rate_limit_rps: 3}\n"})
    assert store.authenticate("Bearer sk-yyyyyyyy").name == "y"


def test_auth_off_without_sources():
    assert KeyStore.from_config(AuthConfig(), environ={}) is None


CONFIG_ERRORS = [
    (AuthConfig(api_keys_env="NOPE"), {}, "NOPE is unset"),
    (AuthConfig(api_keys_file="/does/not/exist"), {}, "does not exist"),
    (AuthConfig(api_keys_env="K"), {"K": "[{name: a}]"}, "invalid API key list"),
    (AuthConfig(api_keys_env="K"), {"K": "{not: a list}"}, "invalid API key list"),
    (AuthConfig(api_keys=[APIKey(name="a", key="sk-aaaaaaaa"), APIKey(name="a", key="sk-bbbbbbbb")]), {}, "unique"),
]


@pytest.mark.parametrize("cfg,env,needle", CONFIG_ERRORS)
def test_config_errors_fail_closed(cfg, env, needle):
    with pytest.raises(ConfigError) as info:
        KeyStore.from_config(cfg, environ=env)
    assert needle in str(info.value)


@pytest.mark.parametrize("data", [{"name": "a"}, {"name": "a", "key": "short"},
                                  {"name": "a", "key": "sk-aaaaaaaa", "key_sha256": "0" * 64}])
def test_bad_key_entries(data):
    with pytest.raises(ValueError):
        APIKey.model_validate(data)
