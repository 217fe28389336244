"""A real, local kube-apiserver (with etcd) for tests and for trying manifests.

No kubelet, scheduler or KubeRay operator runs: objects are stored, defaulted
and validated against the installed CRDs exactly as on a cluster, but nothing
reconciles them. The CRDs are rebuilt from the shipped structural schema (or
read from ``$LLMD_RAY_KUBERAY_CRDS``). The binary comes from ``kuberay/build_apiserver.sh``; etcd
from Debian's ``etcd-server``::

    python -m llmd_ray.kuberay.apiserver      # prints a kubeconfig path; Ctrl-C stops it
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from llmd_ray.host import free_ports
VERSION = "1.20.2"
TOKEN = "llmd-ray-test-token"


def cache_dir() -> Path:
    base = os.environ.get("LLMD_RAY_KUBE_APISERVER_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmd_ray", "kube-apiserver")
    return Path(base)


def find_apiserver() -> Path | None:
    env = os.environ.get("LLMD_RAY_KUBE_APISERVER")
    path = Path(env) if env else cache_dir() / f"v{VERSION}" / "kube-apiserver"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_etcd() -> Path | None:
    found = shutil.which("etcd")
    return Path(found) if found else None


def missing_reason() -> str | None:
    """Why a local API server cannot start here (None: it can)."""
    if find_apiserver() is None:
        return (f"no kube-apiserver binary at {cache_dir() / f'v{VERSION}' / 'kube-apiserver'} "
                "(build it with kuberay/build_apiserver.sh, ~12 min, or set LLMD_RAY_KUBE_APISERVER)")
    if find_etcd() is None:
        return "no etcd on PATH (apt-get install etcd-server)"
    if shutil.which("openssl") is None:
        return "no openssl on PATH (needed for the service-account key)"
    return None



class LocalAPIServer:
    """etcd + kube-apiserver on loopback ports, in a temporary directory; a context manager."""

    def __init__(self, workdir: str | Path | None = None, ready_timeout_s: float = 90.0):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="llmd-kube-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self.procs: list[subprocess.Popen] = []
        self.kubeconfig = self.dir / "kubeconfig"
        self.startup_s = 0.0

    def __enter__(self) -> LocalAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
        log.close()
        self.procs.append(p)
        return p

    def log_tail(self, name: str, n: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def start(self) -> None:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        t0 = time.monotonic()
        certs = self.dir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        key = certs / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(certs / "sa.pub")],
                       check=True, capture_output=True)
        (self.dir / "tokens.csv").write_text(f'{TOKEN},llmd-ray-admin,1,"system:masters"\n')
        client_port, peer_port, self.port = free_ports(3, "127.0.0.1")
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", [
            str(find_etcd()), "--data-dir", str(self.dir / "etcd"), "--name", "test",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}", "--log-level", "warn",
        ])
        self._spawn("kube-apiserver", [
            str(find_apiserver()),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(self.port),
            "--cert-dir", str(certs),
            "--token-auth-file", str(self.dir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(certs / "sa.pub"),
            "--service-account-signing-key-file", str(key),
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--disable-admission-plugins", "ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--watch-cache=true",
            "--v", "1",
        ])
        self._write_kubeconfig(certs)
        self._wait_ready()
        self.startup_s = time.monotonic() - t0

    def _write_kubeconfig(self, certs: Path) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            # apiserver.crt holds the self-signed serving cert and its CA (valid for 127.0.0.1)
            "clusters": [{"name": "local", "cluster": {"server": self.url,
                                                      "certificate-authority": str(certs / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": "default"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))

    def _wait_ready(self) -> None:
        import ssl
        import urllib.error
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the cert is written once the server starts
        req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + self.ready_timeout_s
        last = ""
        while time.monotonic() < deadline:
            for p, name in zip(self.procs, ("etcd", "kube-apiserver")):
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.3)
        tail = self.log_tail("kube-apiserver")
        self.stop()
        raise RuntimeError(f"kube-apiserver not ready in {self.ready_timeout_s:g} s ({last}):\n{tail}")

    def api_client(self) -> Any:
        from kubernetes import client, config

        c = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=c)
        return client.ApiClient(c)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def install_crds(api_client: Any, crds: list[dict[str, Any]] | None = None, timeout_s: float = 60.0) -> list[str]:
    """Create (or replace) the CRDs and wait until each is Established; returns their names.

    `crds` are CustomResourceDefinition documents; by default those of
    :func:`llmd_ray.kuberay.structural.load_crds`: ``$LLMD_RAY_KUBERAY_CRDS`` if
    set, else the ones rebuilt from the shipped structural schema (the KubeRay
    v1.7.0 CRDs minus documentation and printer columns).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from llmd_ray.kuberay.structural import load_crds

    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for crd in load_crds() if crds is None else crds:
        crd = {**crd, "metadata": dict(crd["metadata"])}  # resourceVersion goes on a copy
        name = crd["metadata"]["name"]
        try:  # raw responses: deserializing 1 MB CRDs into models is slow and pointless here
            ext.create_custom_resource_definition(crd, _preload_content=False)
        except ApiException as e:
            if e.status != 409:
                raise
            current = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            ext.replace_custom_resource_definition(name, crd, _preload_content=False)
        names.append(name)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            obj = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
            conds = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout_s:g} s")
            time.sleep(0.2)
    return names


def main() -> int:
    with LocalAPIServer() as srv:  # its temporary directory goes when it stops
        names = install_crds(srv.api_client())
        print(f"kube-apiserver v{VERSION} ready at {srv.url} in {srv.startup_s:.1f} s; CRDs: {', '.join(names)}")
        print(f"export KUBECONFIG={srv.kubeconfig}   # Ctrl-C stops it")
        try:
            while all(p.poll() is None for p in srv.procs):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
