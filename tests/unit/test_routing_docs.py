"""Plugin docs: every plugin documents itself; docs/routing/plugins.md is generated and current."""

import re

import pytest
import yaml

from llmd_ray.routing import Scheduler
from llmd_ray.routing.docgen import DOC_PATH, docstring_of, render, yaml_example
from llmd_ray.routing.registry import PLUGIN_TYPES


@pytest.mark.parametrize("cls", PLUGIN_TYPES, ids=lambda c: c.type)
def test_docstring_sections(cls):
    doc = docstring_of(cls)
    assert doc.startswith(f"``{cls.type}``: ")
    for section in ("Inputs:", "Parameters:", "Example:"):
        assert section in doc, f"{cls.type}: missing {section}"


@pytest.mark.parametrize("cls", PLUGIN_TYPES, ids=lambda c: c.type)
def test_docstring_lists_exactly_the_parameters(cls):
    doc = docstring_of(cls)
    listed = doc.split("Parameters:", 1)[1].split("\n\n", 1)[0]
    names = set(re.findall(r"``(\w+)``", listed))
    expected = {f.alias for f in cls.Parameters.model_fields.values()}
    assert names == expected
    if not expected:
        assert listed.strip() == "none."
    for f in cls.Parameters.model_fields.values():
        assert f.description, f"{cls.type}.{f.alias}: Field(description=...) missing"


@pytest.mark.parametrize("cls", PLUGIN_TYPES, ids=lambda c: c.type)
def test_yaml_example_is_a_valid_config(cls):
    example = yaml_example(cls)
    config = yaml.safe_load(example)
    assert any(p["type"] == cls.type for p in config["plugins"])
    Scheduler.from_config(example)


def test_plugins_md_is_current():
    assert DOC_PATH.read_text() == render(), "run: python -m llmd_ray.routing.docgen"
