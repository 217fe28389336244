"""A forked engine process takes vLLM's title through Ray's setproctitle as well (engine/vllm_build.py)."""

from llmd_ray.engine import vllm_build


def test_vllm_title_is_prefix_name_and_suffix():
    assert vllm_build._vllm_title("Worker", "", "VLLM") == "VLLM::Worker"
    assert vllm_build._vllm_title("EngineCore", "0", "VLLM") == "VLLM::EngineCore_0"


def test_wrapped_title_calls_vllms_own_first_and_never_raises(monkeypatch):
    calls = []
    wrapped = vllm_build._with_ray_title(lambda name, suffix="", **kw: calls.append((name, suffix, kw)))
    seen = []
    import ray._raylet as raylet

    monkeypatch.setattr(raylet, "setproctitle", lambda title: seen.append(title))
    wrapped("Worker", prefix="VLLM")
    assert calls == [("Worker", "", {"prefix": "VLLM"})] and seen == ["VLLM::Worker"]
    monkeypatch.setattr(raylet, "setproctitle", lambda title: 1 / 0)
    wrapped("EngineCore", "1", prefix="VLLM")  # a failing title must not stop the engine
    assert calls[-1] == ("EngineCore", "1", {"prefix": "VLLM"})
