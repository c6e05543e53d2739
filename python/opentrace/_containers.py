"""Containers as their runtimes know them: the events' ``container_name``, ``container_image``,
``pod`` and ``namespace``, and ``watch(container=NAME_OR_ID)``.

The compiled half keeps a registry, container id -> what its runtime says of it, that the events
read as they are decoded. One resolver thread per process (started with the first open watcher)
fills it: first with the containers running when it starts, then with each container id that
events meet and the registry does not know (``_opentrace.containers_wanted``), asked of each
runtime in turn over its API socket: docker's, podman's (libpod API), containerd's (gRPC).
Reading events never waits for a runtime, so the first events of a container that started after
the watcher may carry None.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import quote

from . import _opentrace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Found", "container_cgroup", "runtimes", "start"]

# Seconds a runtime may take to answer one request.
TIMEOUT = 2.0
# A container no runtime knew is asked for again, at its next event, after this many seconds.
RETRY = 30.0
# How often containers gone from their runtimes are forgotten (seconds).
PRUNE = 60.0

# The CRI's labels on a Kubernetes pod's containers (containerd, CRI-O, cri-dockerd set them).
POD_LABEL = "io.kubernetes.pod.name"
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_LABEL = "io.kubernetes.container.name"


class Found:
    """What a runtime says of one container."""

    __slots__ = ("id", "image", "name", "namespace", "pid", "pod")

    def __init__(self, id: str, name: str | None, image: str | None, labels: dict[str, str] | None,
                 pod: str | None = None, pid: int = 0) -> None:
        labels = labels or {}
        self.id = id
        # A Kubernetes container's own name (the runtime's is made up: k8s_web_web-0_shop_...).
        self.name = labels.get(CONTAINER_LABEL) or name or None
        self.image = image or None
        self.pod = labels.get(POD_LABEL) or pod or None
        self.namespace = labels.get(NAMESPACE_LABEL) or None
        self.pid = pid

    def learn(self) -> None:
        _opentrace.container_learn(self.id, self.name, self.image, self.pod, self.namespace)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _get(path: str, url: str) -> Any:
    """GET ``url`` from the HTTP API at the unix socket ``path``: its JSON, or None for a 404.
    OSError when it does not answer, or not as expected."""
    conn = _UnixHTTP(path)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        body = response.read()
    except http.client.HTTPException as e:
        raise OSError(f"not an HTTP answer ({type(e).__name__})") from None
    finally:
        conn.close()
    if response.status == 404:
        return None
    if response.status != 200:
        raise OSError(f"HTTP {response.status} for {url}")
    try:
        return json.loads(body)
    except ValueError:
        raise OSError(f"not JSON from {url}") from None


class Runtime:
    """A container runtime's API, at a unix socket: from ``env`` (``unix://PATH`` or ``PATH``), else
    ``default``. Only unix sockets are asked (a ``tcp://`` address is connected to as no socket)."""

    name = ""
    env = ""
    default = ""

    def __init__(self) -> None:
        address = os.environ.get(self.env) or self.default
        self.socket = address.removeprefix("unix://")

    def __str__(self) -> str:
        return f"{self.name} at {self.socket}"

    def running(self) -> list[Found]:
        """The containers running now."""
        raise NotImplementedError

    def find(self, key: str) -> Found | None:
        """The container named ``key``, or with that id or id prefix; None if there is none."""
        raise NotImplementedError


class Docker(Runtime):
    name, env, default = "docker", "DOCKER_HOST", "/var/run/docker.sock"

    def running(self) -> list[Found]:
        return [
            Found(c["Id"], (c.get("Names") or [""])[0].lstrip("/"), c.get("Image"), c.get("Labels"))
            for c in _get(self.socket, "/containers/json") or []
        ]

    def find(self, key: str) -> Found | None:
        c = _get(self.socket, f"/containers/{quote(key, safe='')}/json")
        if c is None:
            return None
        config, state = c.get("Config") or {}, c.get("State") or {}
        return Found(c["Id"], c.get("Name", "").lstrip("/"), config.get("Image"), config.get("Labels"),
                     pid=state.get("Pid") or 0)


class Podman(Runtime):
    """Podman's own (libpod) API, as ``podman system service`` serves it (the ``podman.socket``
    unit, where systemd runs); it names the podman pod a container is in."""

    name, env, default = "podman", "CONTAINER_HOST", "/run/podman/podman.sock"
    API = "/v4.0.0/libpod"

    def running(self) -> list[Found]:
        return [
            Found(c["Id"], (c.get("Names") or [""])[0], c.get("Image"), c.get("Labels"), c.get("PodName"))
            for c in _get(self.socket, f"{self.API}/containers/json") or []
        ]

    def find(self, key: str) -> Found | None:
        c = _get(self.socket, f"{self.API}/containers/{quote(key, safe='')}/json")
        if c is None:
            return None
        pod = None
        if c.get("Pod"):
            pod = (_get(self.socket, f"{self.API}/pods/{quote(c['Pod'], safe='')}/json") or {}).get("Name")
        config, state = c.get("Config") or {}, c.get("State") or {}
        return Found(c["Id"], c.get("Name"), c.get("ImageName"), config.get("Labels"), pod, state.get("Pid") or 0)


def runtimes() -> list[Runtime]:
    """The runtimes asked, in order (their sockets as the environment says now)."""
    from ._containerd import Containerd

    return [Docker(), Podman(), Containerd()]


def _why(e: OSError) -> str:
    if isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
        return "not running"
    if e.errno:
        return _opentrace.errno_text(e.errno)
    return str(e) or type(e).__name__


def container_cgroup(key: str) -> str:
    """``watch(container=key)``: the cgroup v2 path (under the mount) of the container that a runtime
    knows by the name, id or id prefix ``key``, or, when none does, whose full id or id prefix a
    cgroup names. ValueError saying whom it asked otherwise."""
    if not key:
        raise ValueError("container must name a container (its name, or its id or a prefix of it), not ''")
    cgroups = None
    asked = []
    for runtime in runtimes():
        try:
            found = runtime.find(key)
        except OSError as e:
            asked.append(f"{runtime} ({_why(e)})")
            continue
        if found is None:
            asked.append(f"{runtime} (no such container)")
            continue
        found.learn()  # its events are named from the first one on
        path = _own_cgroup(found.pid, found.id)
        if path is None:
            cgroups = _opentrace.container_cgroups()
            path = cgroups.get(found.id)
        if path is None and found.pid <= 0:
            raise ValueError(f"container: {key!r} ({runtime.name} container {found.id[:12]}) is not running: "
                             "no cgroup of it to watch")
        if path is None:
            raise ValueError(f"container: {key!r} ({runtime.name} container {found.id[:12]}, process {found.pid}): "
                             "no cgroup v2 names it (its runtime's cgroup layout is not one opentrace knows)")
        return path
    hex_digits = all(c in "0123456789abcdef" for c in key)
    if hex_digits:
        cgroups = _opentrace.container_cgroups() if cgroups is None else cgroups
        matches = sorted(path for id, path in cgroups.items() if id.startswith(key))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"container: {key!r} is the start of {len(matches)} containers' ids; give more of it")
    named = ", and no cgroup names a container id starting with it" if hex_digits else ""
    raise ValueError(f"container: no container {key!r}: asked {'; '.join(asked)}{named}")


def _own_cgroup(pid: int, id: str) -> str | None:
    """The cgroup v2 path of process ``pid`` if it is container ``id``'s (read from /proc)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None or _opentrace.cgroup_container_id(os.fsencode(path)) != id:
        return None
    return path


# The resolver thread ------------------------------------------------------------------------------

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stopping = False


def start() -> None:
    """Starts the process's resolver thread, unless it runs."""
    global _thread, _stopping
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        if _thread is None:
            atexit.register(_stop)
        _stopping = False
        _opentrace.containers_stop(False)
        _thread = threading.Thread(target=_resolve, name="opentrace-containers", daemon=True)
        _thread.start()


def _stop() -> None:
    """At exit: the thread is woken and ends (it never waits in the compiled half again)."""
    global _stopping
    _stopping = True
    _opentrace.containers_stop()
    thread = _thread
    if thread is not None:
        thread.join(0.5)


def _after_fork_in_child() -> None:
    global _thread
    _thread = None


def _ask(key: str) -> Found | None:
    for runtime in runtimes():
        try:
            found = runtime.find(key)
        except OSError:
            continue
        if found is not None:
            return found
    return None


def _running() -> dict[str, Found] | None:
    """The containers running in every runtime that answers; None if none does."""
    running: dict[str, Found] | None = None
    for runtime in runtimes():
        try:
            found = runtime.running()
        except OSError:
            continue
        if running is None:
            running = {}
        running.update((f.id, f) for f in found)
    return running


def _resolve() -> None:
    import logging

    log = logging.getLogger("opentrace")
    unanswered: dict[str, float] = {}
    pruned = time.monotonic()
    try:
        for running in (_running() or {}).values():
            running.learn()
    except Exception:  # a runtime answering nonsense must not end the thread
        log.debug("listing the running containers failed", exc_info=True)
    while not _stopping:
        wanted = _opentrace.containers_wanted(min(RETRY, PRUNE))
        if wanted is None or _stopping:
            return
        for id in wanted:
            try:
                found = _ask(id)
            except Exception:
                log.debug("asking the runtimes for container %s failed", id, exc_info=True)
                found = None
            if found is not None:
                found.learn()
            else:
                unanswered[id] = time.monotonic()
        now = time.monotonic()
        expired = [id for id, asked in unanswered.items() if now - asked >= RETRY]
        if expired:
            _opentrace.containers_forget(expired)
            for id in expired:
                del unanswered[id]
        if now - pruned >= PRUNE:
            pruned = now
            _prune(set(unanswered))


def _prune(unanswered: set[str]) -> None:
    """Forgets the containers that the runtimes no longer run (the registry stays bounded)."""
    running = _running()
    if running is None:
        return
    gone = [id for id, info in _opentrace.containers_known().items()
            if info is not None and id not in running and id not in unanswered]
    if gone:
        _opentrace.containers_forget(gone)


os.register_at_fork(after_in_child=_after_fork_in_child)
