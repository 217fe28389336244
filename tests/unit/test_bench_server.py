"""Server lifecycle helper: start a command, wait for health, stop it and what it spawned."""

import os
import sys
import time

import httpx
import psutil
import pytest

from llmd_ray.bench.overhead import free_port, start_fake_server
from llmd_ray.bench.server import ServerProcess, serve_run_command, vllm_server_command


def test_fake_server_lifecycle():
    srv = start_fake_server()
    try:
        assert srv.healthy()
        r = httpx.get(srv.base_url + "/v1/models")
        assert r.json()["data"][0]["id"] == "tiny-llama"
        with pytest.raises(RuntimeError, match="already serves"):
            ServerProcess(["true"], srv.base_url).start()
    finally:
        srv.stop()
    assert srv.proc.returncode is not None and not srv.healthy()


def test_exit_before_healthy_reports_log(tmp_path):
    cmd = [sys.executable, "-c", "print('bad flag --foo'); raise SystemExit(3)"]
    s = ServerProcess(cmd, f"http://127.0.0.1:{free_port()}", log_path=tmp_path / "log")
    with pytest.raises(RuntimeError, match="exited with code 3") as e:
        s.start()
    assert "bad flag --foo" in str(e.value)


def test_startup_timeout_kills_the_process():
    s = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], f"http://127.0.0.1:{free_port()}",
                      startup_timeout_s=1.5, stop_timeout_s=2)
    with pytest.raises(TimeoutError):
        s.start()
    assert s.proc.poll() is not None


def test_sigint_ignored_escalates_and_reaps_detached_children(tmp_path):
    (tmp_path / "www/v1").mkdir(parents=True)
    (tmp_path / "www/v1/models").write_text('{"data": []}')
    port, pidfile = free_port(), tmp_path / "child.pid"
    script = (f"setsid sleep 300 & echo $! > {pidfile}; exec {sys.executable} -c \"import signal, http.server, "
              f"functools; signal.signal(signal.SIGINT, signal.SIG_IGN); h = functools.partial("
              f"http.server.SimpleHTTPRequestHandler, directory='{tmp_path / 'www'}'); "
              f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()\"")
    s = ServerProcess(["bash", "-c", script], f"http://127.0.0.1:{port}", startup_timeout_s=30, stop_timeout_s=1)
    s.start()
    child = int(pidfile.read_text())
    assert psutil.pid_exists(child)
    t = time.monotonic()
    rc = s.stop()
    assert rc == -15 and time.monotonic() - t < 15  # SIGINT ignored -> SIGTERM
    time.sleep(0.2)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_command_builders():
    assert serve_run_command("x.yaml")[1:] == ["run", "x.yaml"]
    cmd = vllm_server_command("/m", 8100, extra=["--enforce-eager"])
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "8100" in cmd and cmd[-1] == "--enforce-eager"
    assert os.path.isabs(cmd[0])


@pytest.mark.parametrize("apps, expected", [
    ([{"import_path": "llmd_ray:build_app"}], "/health"),  # ours: ready once an engine replica is
    ([{"import_path": "llmd_ray:build_app"}, {"import_path": "llmd_ray:build_app"}], "/health"),
    ([{"import_path": "ray.serve.llm:build_openai_app"}], "/v1/models"),  # anything else: the OpenAI route
    ([{"import_path": "llmd_ray:build_app"}, {"import_path": "other:app"}], "/v1/models"),
    ([], "/v1/models"),
])
def test_health_path_for_serve_configs(tmp_path, apps, expected):
    import yaml

    from llmd_ray.bench.server import health_path_for

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"applications": apps}))
    assert health_path_for(str(config)) == expected
    assert health_path_for(str(tmp_path / "missing.yaml")) == "/v1/models"
