"""Real containers: docker (a dockerd this module starts), podman (rootful) and containerd (docker's
own, driven with ctr as the kubelet's CRI would label a pod's container), each running a tiny image
made here from Debian's busybox-static (no registry is needed). Events are checked against what
the runtime says (``inspect``) and what the process inside says of itself (its pid, its cgroup).

This VM has no systemd and hybrid cgroups (cgroup2 at /sys/fs/cgroup/unified): docker and podman
run with the cgroupfs driver, whose runc puts a container in the cgroup2 hierarchy too
(``/docker/<id>``, ``/libpod_parent/libpod-<id>``). The machine withholds CAP_SYS_RESOURCE, so
podman's default rlimits (nofile and nproc 1048576) cannot be set: its config here asks for less.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import opentrace
from opentrace import _opentrace
from opentrace.cli import main

from .conftest import cgroup2_mount, in_cgroup, settle, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted")]

IMAGE = "ot-busybox:test"
POD, NAMESPACE, CONTAINER = "io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.container.name"
# Run inside a container: the cgroup it is in as it sees it, then a shell's own pid (in the
# container's PID namespace) and the open of FILE made under that same pid.
INSIDE = 'cat /proc/self/cgroup; sh -c "echo \\$\\$; exec cat {}"'
APPLETS = ("sh", "cat", "echo", "sleep")
# A file of the image's own (docker and podman add /etc/hostname; containerd alone does not).
MOTD = "/etc/motd"


def _interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF file asks for a dynamic loader (a PT_INTERP header)."""
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = int.from_bytes(elf[0x36:0x38], "little"), int.from_bytes(elf[0x38:0x3A], "little")
    return any(int.from_bytes(elf[phoff + i * size : phoff + i * size + 4], "little") == 3 for i in range(count))


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem of one static busybox and its applets' links, as a tarball to import."""
    busybox = Path("/bin/busybox")
    elf = busybox.read_bytes() if busybox.exists() else b""
    if elf[:5] != b"\x7fELF\x02" or _interpreter(elf):
        pytest.fail("the tests' image needs a static /bin/busybox: install busybox-static (scripts/bootstrap does)")
    tar_path = tmp_path_factory.mktemp("image") / "busybox.tar"
    with tarfile.open(tar_path, "w") as tar:
        for directory in ("bin", "etc", "proc", "sys", "dev", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        motd = b"made by opentrace's tests\n"
        info = tarfile.TarInfo(MOTD.lstrip("/"))
        info.size, info.mode = len(motd), 0o644
        tar.addfile(info, io.BytesIO(motd))
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return tar_path


def _command(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/bootstrap installs docker.io, podman and busybox-static")
    return found


class Runtime:
    """A runtime's command line (``runtime(*args)`` -> its stdout) and where its API listens."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], image: str, socket_path: str) -> None:
        self.name, self.argv, self.env, self.image, self.socket = name, argv, env, image, socket_path

    def environ(self) -> dict[str, str]:
        """Its command's environment: the variables that point opentrace at runtimes would make
        podman a remote client of the socket they name."""
        pointers = ("DOCKER_HOST", "CONTAINER_HOST", "CONTAINERD_ADDRESS")
        return {**{k: v for k, v in os.environ.items() if k not in pointers}, **self.env}

    def __call__(self, *args: str, check: bool = True) -> str:
        """Runs the runtime's command; its stdout. Fails saying its stderr (``check=False``: says
        nothing, for cleaning up)."""
        try:
            done = subprocess.run([*self.argv, *args], env=self.environ(), capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            if check:
                raise
            return ""
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode().strip()

    def run(self, name: str, *options: str) -> str:
        """Starts a container ``name`` that sleeps (and is killed at once when removed); its full id."""
        return self("run", "-d", "--name", name, "--network", "none", "--stop-signal", "KILL", *options, self.image,
                    "sleep", "1000")

    def inspect(self, name: str) -> dict[str, object]:
        info: dict[str, object] = json.loads(self("inspect", name))[0]
        return info


def _ping(socket_path: str, url: str) -> bool:
    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(2)
            self.sock.connect(socket_path)

    conn = Unix("localhost", timeout=2)
    try:
        conn.request("GET", url)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait_up(daemon: subprocess.Popen[bytes], socket_path: str, url: str, log: Path, what: str) -> None:
    """Until the daemon answers on its socket; skips, with its last words, if it exits (this machine
    cannot run it); fails if it neither answers nor exits within a minute."""
    deadline = time.monotonic() + 60
    while not _ping(socket_path, url):
        if daemon.poll() is not None:
            last = log.read_text(errors="replace").strip().splitlines()[-3:]
            pytest.skip(f"{what} does not run on this machine: {' / '.join(last)}")
        assert time.monotonic() < deadline, f"{what} did not answer on {socket_path} within 60 s; see {log}"
        time.sleep(0.05)


# What a runtime says when the kernel or the machine refuses it a container.
_REFUSALS = ("cgroup", "namespace", "not permitted", "permission denied", "not supported", "overlay", "seccomp")


def _probe(runtime: Runtime) -> None:
    """A runtime that cannot start a trivial container because the kernel refuses it (its
    namespaces, cgroups, mounts or limits) is a reason to skip, said with its own error; any
    other failure fails."""
    done = subprocess.run([*runtime.argv, "run", "--rm", "--network", "none", runtime.image, "echo", "ok"],
                          env=runtime.environ(), capture_output=True, timeout=120)
    said = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0 and any(word in said.lower() for word in _REFUSALS):
        pytest.skip(f"{runtime.name} cannot run a container on this machine: {said[-300:]}")
    assert done.returncode == 0 and done.stdout == b"ok\n", f"{runtime.name} run failed: {said}"


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _remove(directory: Path) -> None:
    """Unmounts what a runtime left mounted under ``directory`` (deepest first), then removes it."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1].encode().decode("unicode_escape") for line in f]
    for mount in sorted((m for m in mounts if m.startswith(f"{directory}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def docker(image_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A dockerd of the tests' own (data, state and socket in a temporary directory; the cgroupfs
    driver; no bridge, no iptables), stopped at the end of the session."""
    dockerd = _command("dockerd")
    cli = _command("docker")  # the package's client (not one in /usr/local/bin, of another version)
    root = tmp_path_factory.mktemp("docker")
    sock = f"{root}/docker.sock"
    log = root / "dockerd.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [dockerd, "--data-root", f"{root}/data", "--exec-root", f"{root}/exec", "-H", f"unix://{sock}",
             "--pidfile", f"{root}/docker.pid", "--exec-opt", "native.cgroupdriver=cgroupfs", "--bridge=none",
             "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    runtime = Runtime("docker", [cli, "-H", f"unix://{sock}"], {}, IMAGE, sock)
    try:
        _wait_up(daemon, sock, "/_ping", log, "dockerd")
        runtime("import", str(image_tar), IMAGE)
        _probe(runtime)
        yield runtime
    finally:
        ids = runtime("ps", "-aq", check=False).split() if daemon.poll() is None else []
        if ids:
            runtime("rm", "-f", *ids, check=False)
        _stop(daemon)
        _remove(root)


@pytest.fixture(scope="session")
def podman(image_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Rootful podman with its storage in a temporary directory and the cgroupfs manager (there is
    no systemd here for its default one), and its API served by ``podman system service`` on a
    socket of its own; everything removed at the end of the session."""
    binary = _command("podman")
    root = tmp_path_factory.mktemp("podman")
    (root / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/storage"\nrunroot = "{root}/run"\n'
    )
    env = {"CONTAINERS_CONF": f"{root}/containers.conf", "CONTAINERS_STORAGE_CONF": f"{root}/storage.conf"}
    sock = f"{root}/podman.sock"
    runtime = Runtime("podman", [binary], env, f"localhost/{IMAGE}", sock)
    runtime("import", str(image_tar), runtime.image)
    _probe(runtime)
    log = root / "service.log"
    with open(log, "wb") as out:
        service = subprocess.Popen([binary, "system", "service", "--time=0", f"unix://{sock}"],
                                   env=runtime.environ(), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_up(service, sock, "/v4.0.0/libpod/_ping", log, "podman system service")
        yield runtime
    finally:
        _stop(service)
        runtime("rm", "-af", "-t", "0", check=False)
        runtime("system", "reset", "--force", check=False)
        _remove(root)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Points opentrace at the runtimes given (``asked(docker, podman)``), and every other at a
    socket that does not exist, whatever runs on this machine."""

    def point(*runtimes: Runtime, containerd: str | None = None) -> None:
        given = {r.name: r.socket for r in runtimes}
        for name, variable in (("docker", "DOCKER_HOST"), ("podman", "CONTAINER_HOST")):
            monkeypatch.setenv(variable, f"unix://{given.get(name, tmp_path / f'no-{name}.sock')}")
        monkeypatch.setenv("CONTAINERD_ADDRESS", containerd or str(tmp_path / "no-containerd.sock"))

    point()
    return point


def known(container_id: str) -> bool:
    return _opentrace.containers_known().get(container_id) is not None


@pytest.fixture(params=["docker", "podman"])
def runtime(request: pytest.FixtureRequest, asked: Callable[..., None]) -> Runtime:
    found: Runtime = request.getfixturevalue(request.param)
    asked(found)
    return found


@contextlib.contextmanager
def container(runtime: Runtime, *options: str) -> Iterator[tuple[str, str]]:
    name = f"ot-{uuid.uuid4().hex[:10]}"
    try:
        yield name, runtime.run(name, *options)
    finally:
        runtime("rm", "-f", name, check=False)


def test_a_containers_opens_as_the_runtime_and_the_process_inside_say(runtime: Runtime) -> None:
    labels = ["--label", f"{POD}=web-0", "--label", f"{NAMESPACE}=shop"]
    with container(runtime, *labels) as (name, cid):
        info = runtime.inspect(name)
        assert info["Id"] == cid
        with opentrace.watch(comm="cat", full_path=True) as w:
            out = runtime("exec", name, "sh", "-c", INSIDE.format("/etc/hostname")).splitlines()
            events = [e for e in settle(w) if e.container_id == cid]
        own = next(line[3:] for line in out if line.startswith("0::"))
        ns_pid, hostname = int(out[-2]), out[-1]
        (ev,) = [e for e in events if e.path == "/etc/hostname"]
        assert ev.ns_pid == ns_pid != ev.pid  # the pid the shell inside printed, not the host's
        assert ev.full_path == "/etc/hostname"  # as the container sees it, not the overlay's path
        assert ev.fd is not None and hostname == info["Config"]["Hostname"]  # type: ignore[index]
        layout = {"docker": f"/docker/{cid}", "podman": f"/libpod_parent/libpod-{cid}"}[runtime.name]
        assert ev.cgroup == own == layout
        (cgroup_read,) = [e for e in events if e.path == "/proc/self/cgroup"]
        assert cgroup_read.cgroup == ev.cgroup and cgroup_read.cgroup_id == ev.cgroup_id != 0

        # Named once the runtime has answered (events never wait for it).
        wait_for(lambda: known(cid), f"{runtime.name} naming container {cid[:12]}")
        with opentrace.watch(comm="cat") as w:
            runtime("exec", name, "cat", "/etc/hostname")
            (named,) = [e for e in settle(w) if e.container_id == cid]
    assert (named.container_name, named.container_image, named.pod, named.namespace) == (
        name, runtime.image, "web-0", "shop")
    shown = named.to_dict()
    assert [shown[k] for k in ("container_name", "container_image", "pod", "namespace")] == [
        name, runtime.image, "web-0", "shop"]
    assert pickle.loads(pickle.dumps(named)) == named


def test_events_outside_containers_have_no_names(docker: Runtime, asked: Callable[..., None], marker: Path) -> None:
    asked(docker)
    with opentrace.watch(comm="cat") as w:
        subprocess.run(["cat", str(marker)], capture_output=True)
        (ev,) = [e for e in settle(w) if e.path == str(marker)]
    assert (ev.container_id, ev.container_name, ev.container_image, ev.pod, ev.namespace) == (None,) * 5


def test_a_podman_pods_name(podman: Runtime, asked: Callable[..., None]) -> None:
    asked(podman)
    pod = f"ot-pod-{uuid.uuid4().hex[:8]}"
    podman("pod", "create", "--infra=false", "--name", pod)
    try:
        with container(podman, "--pod", pod) as (name, cid):
            with opentrace.watch(comm="cat") as w:
                podman("exec", name, "cat", "/etc/hostname")  # opentrace meets the container
                assert cid in {e.container_id for e in settle(w)}
            wait_for(lambda: known(cid), f"podman naming container {cid[:12]}")
            with opentrace.watch(comm="cat") as w:
                podman("exec", name, "cat", "/etc/hostname")
                (ev,) = [e for e in settle(w) if e.container_id == cid]
    finally:
        podman("pod", "rm", "-f", pod, check=False)
    assert (ev.container_name, ev.pod, ev.namespace) == (name, pod, None)
    assert ev.cgroup is not None and ev.cgroup.startswith("/libpod_parent/") and ev.cgroup.endswith(f"/libpod-{cid}")


def test_watch_one_container_by_name_or_id(runtime: Runtime, marker: Path) -> None:
    with container(runtime) as (name, cid), container(runtime) as (other, _):
        for key in (name, cid[:12], cid):
            with opentrace.watch(container=key, comm="cat") as w:
                runtime("exec", other, "cat", "/etc/hostname")
                runtime("exec", name, "cat", "/etc/hostname")
                subprocess.run(["cat", str(marker)], capture_output=True)
                paths = ("/etc/hostname", str(marker))
                got = [(e.container_id, e.container_name) for e in settle(w) if e.path in paths]
            # Named from the first event: resolving the container taught opentrace its name.
            assert got == [(cid, name)], key


def test_an_unknown_container_names_the_runtimes_asked(docker: Runtime, asked: Callable[..., None],
                                                      tmp_path: Path) -> None:
    asked(docker)
    with pytest.raises(ValueError) as raised:
        opentrace.watch(container="ot-no-such-container")
    message = str(raised.value)
    assert f"docker at {docker.socket} (no such container)" in message, message
    assert f"podman at {tmp_path}/no-podman.sock (not running)" in message, message
    assert f"containerd at {tmp_path}/no-containerd.sock (not running)" in message, message
    stopped = f"ot-{uuid.uuid4().hex[:10]}"
    docker("create", "--name", stopped, docker.image, "sleep", "1")
    try:
        with pytest.raises(ValueError, match=rf"container: '{stopped}' \(docker container \w{{12}}\) is not running"):
            opentrace.watch(container=stopped)
    finally:
        docker("rm", stopped)
    with pytest.raises(ValueError, match="cgroup or container"):
        opentrace.watch(container="x", cgroup="/")
    with pytest.raises(TypeError):
        opentrace.watch(container=5)  # type: ignore[arg-type]


def test_cli_container_column_and_filter(runtime: Runtime, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with container(runtime) as (name, cid), container(runtime) as (other, _):
        text = subprocess.Popen([sys.executable, "-m", "opentrace", "-C", "--container", name, "-n", "cat"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        as_json = subprocess.Popen([sys.executable, "-m", "opentrace", "--json", "--container", cid[:12]],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for proc in (text, as_json):
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("opentrace: tracing"), line + proc.stderr.read()
        runtime("exec", name, "cat", "/etc/hostname")
        runtime("exec", other, "cat", "/etc/hostname")
        subprocess.run(["cat", str(marker)], capture_output=True)
        outs = []
        for proc in (text, as_json):
            proc.send_signal(signal.SIGINT)
            outs.append(proc.communicate(timeout=30)[0])
    lines = outs[0].splitlines()
    assert lines[0].split() == ["PID", "COMM", "FD", "ERR", "CONTAINER", "PATH"]
    assert [line.split()[-2:] for line in lines[1:] if line.endswith("/etc/hostname")] == [[name, "/etc/hostname"]]
    events = [json.loads(line) for line in outs[1].splitlines()]
    assert {(e["container_id"], e["container_name"], e["container_image"]) for e in events} == {
        (cid, name, runtime.image)}
    assert "/etc/hostname" in {e["path"] for e in events}

    with pytest.raises(SystemExit) as exited:
        main(["--container", "ot-no-such-container"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no container 'ot-no-such-container': asked docker at " in err and "podman at" in err, err


def test_a_kubernetes_pods_container_in_containerd(docker: Runtime, asked: Callable[..., None],
                                                   tmp_path: Path) -> None:
    """containerd (the one dockerd runs) with a container made as the CRI makes a pod's: in the
    ``k8s.io`` namespace, with its labels, in a ``kubepods`` cgroup."""
    ctr = _command("ctr")
    address = docker.socket.replace("docker.sock", "exec/containerd/containerd.sock")
    asked(containerd=address)
    cri = Runtime("ctr", [ctr, "--address", address, "--namespace", "k8s.io"], {}, f"docker.io/library/{IMAGE}",
                  address)
    archive = tmp_path / "image.tar"
    docker("save", "-o", str(archive), IMAGE)
    cri("images", "import", str(archive))
    cid, pod_uid = uuid.uuid4().hex * 2, uuid.uuid4().hex
    cgroup = f"/kubepods/besteffort/pod{pod_uid}/{cid}"
    labels = [f"--label={POD}=web-0", f"--label={NAMESPACE}=shop", f"--label={CONTAINER}=app"]
    cri("run", "-d", "--cgroup", cgroup, *labels, cri.image, cid, "sleep", "1000")
    try:
        with opentrace.watch(comm="cat", full_path=True) as w:
            out = cri("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", INSIDE.format(MOTD)).splitlines()
            (ev,) = [e for e in settle(w) if e.path == MOTD and e.container_id == cid]
        assert ev.cgroup == cgroup == next(line[3:] for line in out if line.startswith("0::"))
        assert ev.ns_pid == int(out[-2]) != ev.pid and ev.full_path == MOTD and ev.fd is not None
        assert out[-1] == "made by opentrace's tests"
        wait_for(lambda: known(cid), "containerd naming the container")
        with opentrace.watch(container="app", comm="cat") as w:  # a Kubernetes container's name
            cri("tasks", "exec", "--exec-id", "e2", cid, "cat", MOTD)
            (named,) = [e for e in settle(w) if e.container_id == cid]
        assert (named.container_name, named.container_image, named.pod, named.namespace) == (
            "app", cri.image, "web-0", "shop")
    finally:
        cri("tasks", "rm", "--force", cid, check=False)
        cri("containers", "rm", cid, check=False)
        cri("images", "rm", cri.image, check=False)


class Stalling:
    """A "runtime" socket that takes a request and answers it one byte at a time, forever (each
    byte in time for the client's read timeout), until ``close()``: whoever asks it is held."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.asked = threading.Event()
        self.client_left = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(4096)
            self.asked.set()
            conn.settimeout(0.2)
            for byte in itertools.cycle(b"HTTP/1.1 200 OK"):
                if self.done.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                    if conn.recv(1) == b"":  # nothing is ever sent to us but a close
                        self.client_left.set()
                        return
                except TimeoutError:
                    continue
                except OSError:
                    self.client_left.set()
                    return

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.listener.close()


def test_events_are_not_held_by_a_runtime_that_does_not_answer(asked: Callable[..., None], tmp_path: Path,
                                                              marker: Path) -> None:
    mount = cgroup2_mount()
    assert mount is not None
    cid = uuid.uuid4().hex * 2
    top = mount / f"opentrace-stall-{uuid.uuid4().hex[:8]}"
    directory = top / "docker" / cid
    directory.mkdir(parents=True)
    stalling = Stalling(tmp_path / "docker.sock")
    try:
        asked(Runtime("docker", [], {}, IMAGE, str(tmp_path / "docker.sock")))
        marker.write_text("x")
        with opentrace.watch(comm="cat") as w:
            in_cgroup(directory, "cat", str(marker))
            # Reading it, opentrace meets the container: docker is asked (or was already, listing
            # the running containers when the resolver started).
            events = [e for e in settle(w) if e.path == str(marker)]
            wait_for(stalling.asked.is_set, "the resolver asking the stalling docker")
            in_cgroup(directory, "cat", str(marker))
            events += [e for e in settle(w) if e.path == str(marker)]
            # Read while the resolver is still held inside its request.
            assert not stalling.client_left.is_set()
        assert [(e.container_id, e.container_name) for e in events] == [(cid, None), (cid, None)]
    finally:
        stalling.close()
        directory.rmdir()
        (top / "docker").rmdir()
        top.rmdir()
