"""The README documents every configuration field."""

from pathlib import Path

import pytest

from llmd_ray.engine.config import EngineConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", list(EngineConfig.model_fields))
def test_engine_config_field_documented(name):
    assert f"| `{name}` |" in README


def test_readme_opens_with_the_two_commands():
    head = README[:400]
    assert "make serve" in head and "make test" in head
