"""Apply, read, wait for and delete RayServices with the official `kubernetes` client.

``kuberay-python-client`` is not published on PyPI and has no RayService
support, so this uses ``kubernetes`` (CustomObjectsApi) directly:

- ``apply``: server-side apply (``application/apply-patch+yaml``) with the field
  manager ``llmd-ray``, optionally ``dryRun=All`` (nothing is persisted);
- ``status``: the ``Ready`` condition and application/deployment statuses;
- ``wait``: follows a watch stream (re-opened until the deadline) until Ready;
- API errors (422 and the rest) become :class:`KubeAPIError` with the server's
  message and each field cause on a line of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from llmd_ray.kuberay.status import ServiceStatus, parse_status

GROUP = "ray.io"
PLURALS = {"RayService": "rayservices", "RayCluster": "rayclusters"}
FIELD_MANAGER = "llmd-ray"


class KubeAPIError(Exception):
    """An error from the API server (or from reaching it), formatted for people."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status, self.reason = status, reason


def api_error(exc: Exception, action: str) -> KubeAPIError:
    """Turn an ApiException / connection error into a KubeAPIError with a readable message."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        body: dict[str, Any] = {}
        try:
            body = json.loads(exc.body) if exc.body else {}
        except (TypeError, ValueError):
            pass
        msg = body.get("message") or exc.reason or str(exc)
        lines = [f"{action}: API server answered {exc.status} {body.get('reason') or exc.reason}: {msg}"]
        for cause in (body.get("details") or {}).get("causes") or []:
            lines.append(f"  {cause.get('field', '')}: {cause.get('message', '')} ({cause.get('reason', '')})")
        if exc.status == 404 and "the server could not find the requested resource" in msg:
            lines.append("  (are the KubeRay CRDs installed? `kubectl get crd rayservices.ray.io`)")
        return KubeAPIError("\n".join(lines), exc.status, body.get("reason") or exc.reason or "")
    return KubeAPIError(f"{action}: cannot reach the API server: {exc}")


class KubeRayClient:
    """RayService operations on one cluster."""

    def __init__(self, api_client: Any = None, *, kubeconfig: str | None = None, context: str | None = None):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_kube_config(config_file=kubeconfig, context=context)
            except Exception as e:  # noqa: BLE001 - fall back to in-cluster, else say why
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    raise KubeAPIError(f"no Kubernetes configuration: {e}") from e
            api_client = client.ApiClient()
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API and return the JSON body as a dict.

        Raw responses: the generated client maps only 200 to a body for PATCH,
        so a server-side apply that creates (201) would come back as None.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = fn(*args, _preload_content=False, **kwargs)
            return json.loads(resp.data) if resp.data else {}
        except (ApiException, HTTPError, OSError) as e:
            raise api_error(e, action) from e

    @staticmethod
    def _target(doc: dict[str, Any], namespace: str | None) -> tuple[str, str, str, str]:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group, _, version = api_version.partition("/")
        if group != GROUP or kind not in PLURALS:
            raise KubeAPIError(f"cannot apply {kind or '?'} {api_version or '?'}: only ray.io RayService/RayCluster")
        meta = doc.get("metadata") or {}
        ns = namespace or meta.get("namespace") or "default"
        if not meta.get("name"):
            raise KubeAPIError(f"{kind} has no metadata.name")
        return version, PLURALS[kind], ns, meta["name"]

    def apply(self, doc: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
              force: bool = True) -> dict[str, Any]:
        """Server-side apply; returns the object the server answered with (not persisted under dry_run)."""
        version, plural, ns, name = self._target(doc, namespace)
        body = {**doc, "metadata": {**doc["metadata"], "namespace": ns}}
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": force,
                                  "_content_type": "application/apply-patch+yaml"}
        if dry_run:
            kwargs["dry_run"] = "All"
        what = f"apply {doc['kind']} {ns}/{name}" + (" (dry run)" if dry_run else "")
        return self._call(what, self.custom.patch_namespaced_custom_object, GROUP, version, ns, plural, name, body, **kwargs)

    def get(self, name: str, namespace: str = "default", version: str = "v1") -> dict[str, Any]:
        return self._call(f"get RayService {namespace}/{name}", self.custom.get_namespaced_custom_object,
                          GROUP, version, namespace, "rayservices", name)

    def status(self, name: str, namespace: str = "default") -> ServiceStatus:
        return parse_status(self.get(name, namespace))

    def wait(self, name: str, namespace: str = "default", timeout_s: float = 900.0,
             on_change: Callable[[ServiceStatus], None] | None = None) -> ServiceStatus:
        """Follow a watch on the RayService until it is Ready for its latest generation.

        Raises TimeoutError (with the last status) when the deadline passes.
        """
        from kubernetes import watch

        deadline = time.monotonic() + timeout_s
        obj = self.get(name, namespace)
        last = parse_status(obj)
        if on_change:
            on_change(last)
        if last.is_ready:
            return last
        rv = obj["metadata"].get("resourceVersion")
        while (left := deadline - time.monotonic()) > 0:
            w = watch.Watch()
            try:
                stream = w.stream(self.custom.list_namespaced_custom_object, GROUP, "v1", namespace, "rayservices",
                                  field_selector=f"metadata.name={name}", resource_version=rv,
                                  timeout_seconds=max(1, int(min(left, 300))), _request_timeout=min(left, 300) + 10)
                for event in stream:
                    kind, item = event["type"], event["object"]
                    if kind == "ERROR":  # e.g. 410 Gone: the resourceVersion expired; re-list
                        rv = None
                        break
                    if kind == "DELETED":
                        raise KubeAPIError(f"RayService {namespace}/{name} was deleted while waiting")
                    rv = item["metadata"].get("resourceVersion", rv)
                    cur = parse_status(item)
                    if on_change and cur != last:
                        on_change(cur)
                    last = cur
                    if cur.is_ready:
                        return cur
                    if time.monotonic() >= deadline:
                        break
            except KubeAPIError:
                raise
            except Exception as e:  # noqa: BLE001 - a dropped stream: re-open it until the deadline
                from kubernetes.client.exceptions import ApiException

                if isinstance(e, ApiException) and e.status not in (410, 500, 503, 504):
                    raise api_error(e, f"watch RayService {namespace}/{name}") from e
                rv = None
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            finally:
                w.stop()
            if rv is None and time.monotonic() < deadline:
                obj = self.get(name, namespace)
                rv = obj["metadata"].get("resourceVersion")
                cur = parse_status(obj)
                if on_change and cur != last:
                    on_change(cur)
                last = cur
                if cur.is_ready:
                    return cur
        raise TimeoutError(f"RayService {namespace}/{name} not Ready after {timeout_s:g} s", last)

    def delete(self, name: str, namespace: str = "default", *, dry_run: bool = False) -> dict[str, Any]:
        # Background: the RayService goes at once; the garbage collector removes its RayClusters and pods.
        kwargs: dict[str, Any] = {"propagation_policy": "Background"}
        if dry_run:
            kwargs["dry_run"] = "All"
        return self._call(f"delete RayService {namespace}/{name}", self.custom.delete_namespaced_custom_object,
                          GROUP, "v1", namespace, "rayservices", name, **kwargs)
