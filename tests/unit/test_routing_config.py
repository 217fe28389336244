"""Config parsing and validation: every error names the plugin (or place) and the field."""

import pytest

from llmd_ray.routing import DEFAULT_CONFIG_YAML, ConfigError, Scheduler, default_config
from llmd_ray.routing.config import SchedulerConfig


def cfg(plugins, profiles=None):
    return {"plugins": plugins, "schedulingProfiles": profiles or [{"name": "default", "plugins": []}]}


def error_of(config) -> str:
    with pytest.raises(ConfigError) as e:
        Scheduler.from_config(config)
    return str(e.value)


@pytest.mark.parametrize(
    "config, message",
    [
        (cfg([{"type": "queue", "name": "my-queue", "parameters": {"foo": 1}}]),
         "plugin 'my-queue' (queue): parameters.foo: extra inputs are not permitted"),
        (cfg([{"type": "load-aware", "parameters": {"threshold": 0}}]),
         "plugin 'load-aware' (load-aware): parameters.threshold: input should be greater than 0"),
        (cfg([{"type": "prefix-cache-affinity", "name": "aff", "parameters": {"warmFraction": 2}}]),
         "plugin 'aff' (prefix-cache-affinity): parameters.warmFraction: input should be less than or equal to 1"),
        (cfg([{"type": "prefix-cache-affinity", "parameters": {"prefillTokensPerSecond": "fast"}}]),
         "plugin 'prefix-cache-affinity' (prefix-cache-affinity): parameters.prefillTokensPerSecond: "
         "input should be a valid number"),
        (cfg([{"type": "role", "parameters": {"role": "decode"}}]),
         "plugins[0].type: plugin type 'role' was removed: under P/D each role is its own deployment"),
        (cfg([{"type": "precise-prefix-cache", "name": "pp", "parameters": {"tierWeights": {"gpu": "x"}}}]),
         "plugin 'pp' (precise-prefix-cache): parameters.tierWeights.gpu: input should be a valid number"),
        (cfg([{"type": "nope"}]), "plugins[0].type: unknown plugin type 'nope' (known: prefix-cache-affinity"),
        (cfg([{"type": "queue"}, {"type": "queue"}]), "plugins[1].name: duplicate plugin name 'queue'"),
        (cfg([{"type": "queue", "weight": 2}]), "plugins[0].weight: extra inputs are not permitted"),
        (cfg([], [{"name": "default", "plugins": [{"pluginRef": "ghost"}]}]),
         "profile 'default': plugins[0].pluginRef 'ghost': no plugin of that name"),
        (cfg([{"type": "prefix-cache-affinity"}],
             [{"name": "default", "plugins": [{"pluginRef": "prefix-cache-affinity", "weight": 2}]}]),
         "profile 'default': plugins[0].pluginRef 'prefix-cache-affinity': weight applies to scorers only"),
        (cfg([{"type": "queue"}], [{"name": "default", "plugins": [{"pluginRef": "queue", "weight": -1}]}]),
         "schedulingProfiles[0].plugins[0].weight: input should be greater than or equal to 0"),
        (cfg([{"type": "max-score"}, {"type": "weighted-random"}],
             [{"name": "default", "plugins": [{"pluginRef": "max-score"}, {"pluginRef": "weighted-random"}]}]),
         "profile 'default': at most one picker, got max-score, weighted-random"),
        (cfg([], [{"name": "a", "plugins": []}, {"name": "b", "plugins": []}]),
         "schedulingProfiles: a scheduler runs exactly one profile, got 2 (a, b)"),
        (cfg([{"type": "queue", "name": "prefix-cache"}, {"type": "no-hit-lru"}]),
         "plugin 'prefix-cache' (queue): the name is needed for the prefix index of no-hit-lru"),
        ({"plugins": []}, "schedulingProfiles: field required"),
        ({"plugins": [], "schedulingProfiles": []}, "schedulingProfiles: list should have at least 1 item"),
        ({**cfg([]), "kind": "Other"}, "kind: input should be 'EndpointPickerConfig'"),
        ({**cfg([]), "extra": 1}, "extra: extra inputs are not permitted"),
        ("plugins: [", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping at the top level, got list"),
    ],
)
def test_config_errors(config, message):
    assert message in error_of(config)


def test_all_errors_reported_at_once():
    e = error_of(cfg([{"type": "queue", "parameters": {"a": 1}}, {"type": "nope"}],
                     [{"name": "default", "plugins": [{"pluginRef": "queue"}, {"pluginRef": "ghost"}]}]))
    assert "parameters.a" in e and "unknown plugin type 'nope'" in e and "'ghost'" in e
    assert "'queue': no plugin" not in e  # a plugin that failed its own validation is not reported twice


def test_yaml_and_names():
    sched = Scheduler.from_config("""
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue
  name: q
- type: load-aware
  parameters: {threshold: 8}
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: q
    weight: 2.5
  - pluginRef: load-aware
""")
    prof = sched.profile
    assert prof.name == "default" and [(s.name, w) for s, w in prof.scorers] == [("q", 2.5), ("load-aware", 1.0)]
    assert sched.plugins["load-aware"].params.threshold == 8
    assert prof.picker.type == "max-score"  # default picker


def test_default_config():
    SchedulerConfig.model_validate(default_config())
    sched = Scheduler.from_config(None)
    again = Scheduler.from_config(DEFAULT_CONFIG_YAML)
    prof = sched.profile
    assert [f.type for f in prof.filters] == ["prefix-cache-affinity"]
    assert [(s.type, w) for s, w in prof.scorers] == [
        ("prefix-cache", 3), ("queue", 2), ("kv-cache-utilization", 2), ("session-affinity", 1),
        ("lora-affinity", 3)]
    assert prof.picker.type == "max-score"
    assert again.profile.name == "default"


def test_parameters_accept_python_names_too():
    sched = Scheduler.from_config(cfg([{"type": "load-aware", "parameters": {"threshold": 3}},
                                       {"type": "session-affinity", "parameters": {"max_sessions": 3}}]))
    assert sched.plugins["session-affinity"].params.max_sessions == 3
