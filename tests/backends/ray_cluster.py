"""A Ray head on this machine, inside a network namespace that holds only the loopback interface.

Ray replaces 127.0.0.1 by the machine's own address, listens on every interface and probes an
outside address to find its own; in a namespace whose only interface is lo, everything it opens is
on 127.0.0.1 and nothing can leave the machine. `RayCluster` makes such a namespace (`ip netns add`,
a name of its own, so sessions side by side do not meet: each namespace has its own ports), starts
`ray start --head` in it with usage stats off, a bounded object store and a temp folder of its own,
and waits until the dashboard's job API answers. The head declares NUM_GPUS GPUs (`--num-gpus`): there is
no GPU here, but Ray schedules on the count it is given, so a job's requests for GPUs are proven (each
worker gets GPU ids and CUDA_VISIBLE_DEVICES from Ray); CPU jobs take none of them. Whatever talks to the cluster runs in the
namespace too (`run`, `popen`).

`RayCluster(worker_nodes=1)` adds a second Ray node to the same namespace (`ray start --address`, a temp
folder, a dashboard agent port and an address of its own: 127.0.0.2, on lo too; Ray Train ranks its workers'
nodes by address, so two nodes on one address would be one node to it): each node declares `node_cpus` CPUs, `node_gpus` GPUs and a
resource of its own (`ftc_node_a` on the head, `ftc_node_b` on the next), and `start()` waits until Ray lists
them all alive (`nodes()`). Both nodes share this machine's file system, so any absolute folder is
storage every node sees.

`stop()` ends every process of the namespace by its pid (`ip netns pids`: only what this cluster
started lives there), SIGTERM first and SIGKILL after a grace period, then deletes the namespace
and the temp folder. It never runs `ray stop`, which ends every Ray process of the machine.

`ray_cluster` (one node) and `two_node_ray_cluster` (a head and a worker node, one CPU and one declared
GPU each) are module-scoped pytest fixtures (import them into a test module): a cluster lives while its
module runs, so idle Ray daemons take no CPU from the tests after it. They skip, with
the reason, when the ray package is not installed, or when no network namespace can be made (the
tests must not start Ray outside one).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DASHBOARD_PORT = 8265
GCS_PORT = 6379
AGENT_PORT = 52365  # the dashboard agent's HTTP port (Ray's default); node i listens on AGENT_PORT + i
OBJECT_STORE_BYTES = 200_000_000
NUM_CPUS = 2
NUM_GPUS = 2  # declared, not real: Ray only schedules them
# A secret the cluster's nodes hold (env.secrets of the test specs): it must reach the job, never a file.
SECRET_NAME = "FTC_TEST_SECRET"
SECRET_VALUE = "not-a-real-secret-4567"
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# Polls the job API from inside the namespace until it answers.
_READY = """\
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        for path in ("/api/version", "/api/jobs/"):
            urllib.request.urlopen(sys.argv[1] + path, timeout=2).read()
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"the Ray dashboard did not answer: {exc}")
        time.sleep(0.5)
"""

# Polls Ray's state API from inside the namespace until argv[2] nodes are alive; prints them as JSON.
_NODES = """\
import json, sys, time
from ray.util.state import list_nodes
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        alive = list_nodes(address=sys.argv[1], filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        if len(alive) >= int(sys.argv[2]):
            break
    except Exception as exc:
        alive = exc
    if time.monotonic() > deadline:
        sys.exit(f"Ray did not list {sys.argv[2]} alive nodes: {alive}")
    time.sleep(0.5)
print(json.dumps([{"node_id": n.node_id, "resources": n.resources_total} for n in alive]))
"""


def node_address(index: int) -> str:
    """The address of node `index` (0: the head): 127.0.0.1, 127.0.0.2, ... (lo holds all of 127.0.0.0/8)."""
    return f"127.0.0.{index + 1}"


def node_resource(index: int) -> str:
    """The resource only node `index` has (0: the head): ftc_node_a, ftc_node_b, ..."""
    return f"ftc_node_{chr(ord('a') + index)}"


class RayCluster:
    """A Ray head (NUM_CPUS CPUs, NUM_GPUS declared GPUs), and `worker_nodes` more nodes, in a loopback-only
    network namespace; with worker nodes, every node declares `node_cpus` CPUs, `node_gpus` GPUs and
    node_resource(i)."""

    def __init__(
        self, python: Path = Path(sys.executable), env: dict[str, str] | None = None,
        worker_nodes: int = 0, node_cpus: int = 1, node_gpus: int = 1,
    ) -> None:
        self.worker_nodes = worker_nodes
        self.node_cpus, self.node_gpus = node_cpus, node_gpus
        self.python = Path(python)
        self.ray = self.python.parent / "ray"
        self.namespace = f"ftc-ray-{os.getpid()}-{secrets.token_hex(3)}"
        # Short: Ray's unix sockets live under it (108 bytes at most for a socket path).
        self.temp = Path(tempfile.mkdtemp(prefix="ftcray-", dir="/tmp"))
        self.dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
        self.env = {**os.environ, **RAY_ENV, **(env or {})}
        self.env["PATH"] = f"{self.python.parent}{os.pathsep}{self.env.get('PATH', '')}"
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "http_proxy", "https_proxy", "all_proxy",
                     "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            self.env.pop(name, None)  # nothing but lo in the namespace: a proxy could not be reached
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"
        self._namespace_made = False

    # -------------------------------------------------------------- commands in the namespace

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *[str(a) for a in args]]

    def run(self, args: list[str], env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace, with the cluster's environment (plus `env`)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(args), env={**self.env, **(env or {})}, **kwargs)  # type: ignore[call-overload]

    def popen(self, args: list[str], env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(args), env={**self.env, **(env or {})}, **kwargs)  # type: ignore[call-overload]

    # -------------------------------------------------------------- life

    def start(self, timeout: float = 180) -> None:
        self._ip("netns", "add", self.namespace)
        self._namespace_made = True
        self._ip("-n", self.namespace, "link", "set", "lo", "up")
        links = subprocess.run(["ip", "-n", self.namespace, "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links
        self._ray_start(
            "--head", f"--port={GCS_PORT}", "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}",
            *self._node_options(0), f"--temp-dir={self.temp}", timeout=timeout,
        )
        ready = self.run([self.python, "-c", _READY, self.dashboard, str(timeout)], timeout=timeout + 10)
        if ready.returncode != 0:
            raise RuntimeError(ready.stderr or ready.stdout)
        for index in range(1, self.worker_nodes + 1):
            node_temp = self.temp / f"node-{index}"  # short: Ray's socket paths live under it
            node_temp.mkdir()
            self._ray_start(
                f"--address=127.0.0.1:{GCS_PORT}", *self._node_options(index), f"--temp-dir={node_temp}",
                f"--dashboard-agent-listen-port={AGENT_PORT + index}", timeout=timeout,
            )
        if self.worker_nodes:
            self.nodes(timeout)

    def _node_options(self, index: int) -> list[str]:
        """The `ray start` options of node `index` (0: the head): its address, CPUs, GPUs, resources, object store."""
        if not self.worker_nodes:
            counts = [f"--num-cpus={NUM_CPUS}", f"--num-gpus={NUM_GPUS}"]
        else:
            counts = [
                f"--num-cpus={self.node_cpus}", f"--num-gpus={self.node_gpus}",
                f"--resources={json.dumps({node_resource(index): 1})}",
            ]
        return [f"--node-ip-address={node_address(index)}", *counts, f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]

    def _ray_start(self, *options: str, timeout: float) -> None:
        result = self.run([self.ray, "start", *options], timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"ray start failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def nodes(self, timeout: float = 120) -> list[dict[str, Any]]:
        """The alive nodes ({node_id, resources}), once all 1 + worker_nodes of them are (RuntimeError after `timeout`)."""
        listed = self.run([self.python, "-c", _NODES, self.dashboard, str(1 + self.worker_nodes), str(timeout)], timeout=timeout + 30)
        if listed.returncode != 0:
            raise RuntimeError(listed.stderr or listed.stdout)
        return list(json.loads(listed.stdout.strip().splitlines()[-1]))

    def pids(self) -> list[int]:
        """The processes of the namespace: the cluster's and what runs against it."""
        if not self._namespace_made:
            return []
        out = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]

    def processes(self, needle: str) -> list[int]:
        """Pids of the namespace's processes whose command line holds `needle` (Ray sets titles like ray::RayTrainWorker)."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if needle in cmdline:
                    found.append(pid)
        return found

    def node_of(self, pid: int) -> int | None:
        """The node (0: the head, i: the i-th worker node) whose raylet started process `pid`, or None."""
        while pid > 1:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if cmdline and cmdline[0].endswith(b"raylet"):
                    return self._raylet_node(cmdline)
            try:  # the parent: the field after the command's name, which may hold spaces and parentheses
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                return None
        return None

    def _raylet_node(self, cmdline: list[bytes]) -> int | None:
        """The node of a raylet, by the --temp_dir it was given (the head's is self.temp, node i's self.temp/node-i)."""
        for arg in cmdline:
            if arg.startswith(b"--temp_dir="):
                temp = Path(arg.split(b"=", 1)[1].decode())
                if temp == self.temp:
                    return 0
                if temp.parent == self.temp and temp.name.startswith("node-"):
                    return int(temp.name.removeprefix("node-"))
        return None

    def stop(self, grace: float = 5) -> None:
        """End every process of the namespace by pid, delete the namespace and the temp folder."""
        try:
            self._signal_all(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            for _ in range(10):
                if not self.pids():
                    break
                self._signal_all(signal.SIGKILL)
                time.sleep(0.3)
        finally:
            if self._namespace_made:
                subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
                self._namespace_made = False
            shutil.rmtree(self.temp, ignore_errors=True)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'ftc[ray]')"
    if shutil.which("ip") is None:
        return "the ip tool (iproute2) is missing: Ray must run in a loopback-only network namespace"
    if os.geteuid() != 0:
        return "network namespaces need root: Ray must run in a loopback-only network namespace"
    if not (Path(sys.executable).parent / "ray").exists():
        return f"no ray command next to {sys.executable}"
    return None


def _started(**options: Any) -> Iterator[RayCluster]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = RayCluster(env={SECRET_NAME: SECRET_VALUE}, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    yield from _started()


@pytest.fixture(scope="module")
def two_node_ray_cluster() -> Iterator[RayCluster]:
    """A head and one worker node, one CPU and one declared GPU each: a job of two one-CPU workers needs both."""
    yield from _started(worker_nodes=1)
