"""QoS classes: configuration and class selection (header, model alias, API key)."""

import pytest
from pydantic import ValidationError

from llmd_ray.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from llmd_ray.topology.qos import QoSClass, QoSConfig

M = "tiny-llama"
CFG = QoSConfig(model_aliases={"code-complete": "interactive"})

SELECT = [
    # (model, header, key_class, expected)
    (None, None, None, "standard"),
    (M, None, None, "standard"),
    (M, "batch", None, "batch"),
    (M, " Interactive ", None, "interactive"),
    (f"{M}:batch", None, None, "batch"),
    ("code-complete", None, None, "interactive"),
    (f"{M}:batch", "interactive", None, "interactive"),  # the header wins over the alias
    (M, None, "batch", "batch"),  # the key's class is the default
    (M, "batch", "standard", "batch"),  # a key may ask for a lower class
    (M, "standard", "standard", "standard"),
    (f"{M}:batch", None, "interactive", "batch"),
]


@pytest.mark.parametrize("model,header,key_class,expected", SELECT)
def test_select(model, header, key_class, expected):
    assert CFG.select(served_model=M, model=model, header=header, key_class=key_class) == expected


SELECT_ERRORS = [
    (M, "platinum", None, InvalidRequestError, "x-llmd-qos"),
    ("gpt-9", None, None, ModelNotFoundError, "model"),
    (f"{M}:platinum", None, None, ModelNotFoundError, "model"),
    (f"other:{'batch'}", None, None, ModelNotFoundError, "model"),
    (M, "interactive", "standard", PermissionDeniedError, "x-llmd-qos"),
    (f"{M}:interactive", None, "batch", PermissionDeniedError, "model"),
]


@pytest.mark.parametrize("model,header,key_class,exc,param", SELECT_ERRORS)
def test_select_errors_name_the_field(model, header, key_class, exc, param):
    with pytest.raises(exc) as info:
        CFG.select(served_model=M, model=model, header=header, key_class=key_class)
    assert info.value.param == param


BAD_CONFIGS = [
    ({"classes": {}}, "at least one class"),
    ({"default_class": "gold"}, "default_class"),
    ({"model_aliases": {"x": "gold"}}, "model_aliases.x"),
    ({"classes": {"Bad Name": {"priority": 1}}, "default_class": "Bad Name"}, "invalid class name"),
    ({"classes": {"a": {"priority": 1, "max_queue_wait_s": 0}}, "default_class": "a"}, "max_queue_wait_s"),
    ({"classes": {"a": {"priority": 1, "ttft_slo": 1}}, "default_class": "a"}, "ttft_slo"),
]


@pytest.mark.parametrize("data,needle", BAD_CONFIGS)
def test_bad_config_names_the_field(data, needle):
    with pytest.raises(ValidationError) as info:
        QoSConfig.model_validate(data)
    assert needle in str(info.value)


def test_defaults_and_objectives():
    cfg = QoSConfig()
    assert list(cfg.classes) == ["interactive", "standard", "batch"]
    obj = cfg.objectives()
    assert obj["interactive"].priority > obj["standard"].priority > obj["batch"].priority
    assert obj["interactive"].ttft_s == 0.5 and obj["batch"].sheddable and not obj["standard"].sheddable


def test_header_name_is_case_insensitive():
    assert QoSConfig(header="X-Tier").header == "x-tier"


def test_custom_classes():
    cfg = QoSConfig(classes={"gold": QoSClass(priority=5), "bronze": QoSClass(priority=1, sheddable=True)},
                    default_class="bronze")
    assert cfg.select(served_model=M, model=f"{M}:gold") == "gold"
    assert cfg.select(served_model=M, model=None) == "bronze"


def test_qos_serve_config_validates():
    from pathlib import Path

    import yaml

    from llmd_ray.serving.auth import AuthConfig
    from llmd_ray.serving.flow_control import FlowControlConfig

    path = Path(__file__).resolve().parents[2] / "serve_configs" / "qos.yaml"
    args = yaml.safe_load(path.read_text())["applications"][0]["args"]
    qos = QoSConfig.model_validate(args["qos"])
    assert qos.select(served_model=M, model="code-complete") == "interactive"
    assert FlowControlConfig.model_validate(args["ingress"]["flow_control"]).enabled
    assert AuthConfig.model_validate(args["ingress"]["auth"]).enabled
