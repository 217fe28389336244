"""bench/routing/scaleout.py's pure parts: the serve configs it derives and the kill-run analysis."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("scaleout", ROOT / "bench" / "routing" / "scaleout.py")
scaleout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaleout)


def test_configs_vary_only_ingress_replicas_and_sharing(tmp_path):
    from llmd_ray.serving.app import AppArgs

    systems = scaleout.write_configs(tmp_path, [1, 2, 4], "http://127.0.0.1:8123", scaleout.BASE_CONFIG)
    assert list(systems) == ["ingress1", "ingress2-alone", "ingress2-shared", "ingress4-alone", "ingress4-shared"]
    cfg = scaleout.yaml.safe_load(systems["ingress4-shared"].read_text())
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8123}
    args = AppArgs.model_validate(cfg["applications"][0]["args"])
    assert args.ingress_replicas == 4 and args.router.shares_decisions(4) and args.engine.num_kv_blocks == 128
    alone = AppArgs.model_validate(scaleout.serve_config(4, False, "http://127.0.0.1:8000")["applications"][0]["args"])
    assert not alone.router.shares_decisions(4)
    only_shared = scaleout.write_configs(tmp_path / "s", [1, 2, 4], "http://127.0.0.1:8123", scaleout.BASE_CONFIG, alone=False)
    assert list(only_shared) == ["ingress1", "ingress2-shared", "ingress4-shared"]


def _rec(i, sent, e2e_ms=100.0, ok=True, cached=50, error=None, status=200):
    return {"id": i, "sent_s": sent, "e2e_ms": e2e_ms, "ok": ok, "status_code": status, "error": error,
            "cached_tokens": cached, "input_tokens": 100, "ttft_ms": 10.0 * (i + 1) if ok else None}


def test_kill_analysis_separates_failures_in_flight_at_the_kill_and_windows():
    records = [_rec(0, 1.0, cached=20), _rec(1, 9.5, e2e_ms=2000, ok=False, error="stream ended", status=200),
               _rec(2, 11.0, cached=40), _rec(3, 30.0, cached=80),
               _rec(4, 31.0, ok=False, error=None, status=None)]  # after the kill, no error text: not clean
    out = scaleout.analyze(records, kill_s=10.0, recover_s=10.0)
    assert out["in_flight_at_kill"] == 1 and out["failed"] == 2
    assert out["failed_not_in_flight_at_kill"] == 1 and out["failed_without_error"] == 1
    assert out["failure_kinds"] == {"other": 2}
    cut = {"status_code": 200, "error": "RemoteProtocolError: peer closed connection without sending complete message body"}
    assert scaleout._kinds([cut, {"status_code": 503, "error": "x"}, {"status_code": None, "error": "ReadTimeout"}]) == {
        "stream_cut": 1, "http_error": 1, "timeout": 1}
    w = out["windows"]
    assert (w["before"]["requests"], w["before"]["failed"], w["before"]["kv_hit_rate"]) == (2, 1, 0.2)
    assert w["recovering"]["kv_hit_rate"] == 0.4 and w["after"]["kv_hit_rate"] == 0.8
    assert w["after"]["ttft_p50_ms"] == 40.0
