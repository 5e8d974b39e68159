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

`stop()` ends every process of the namespace by its pid (`ip netns pids`: only what this cluster
started lives there), SIGTERM first and SIGKILL after a grace period, then deletes the namespace
and the temp folder. It never runs `ray stop`, which ends every Ray process of the machine.

`ray_cluster` is the session-scoped pytest fixture (import it into a test module). It skips, with
the reason, when the ray package is not installed, or when no network namespace can be made (the
tests must not start Ray outside one).
"""

from __future__ import annotations

import contextlib
import importlib.util
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

import pytest

DASHBOARD_PORT = 8265
GCS_PORT = 6379
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


class RayCluster:
    """One Ray head (NUM_CPUS CPUs, NUM_GPUS declared GPUs) in a loopback-only network namespace."""

    def __init__(self, python: Path = Path(sys.executable), env: dict[str, str] | None = None) -> None:
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
        result = self.run(
            [
                self.ray, "start", "--head",
                "--node-ip-address=127.0.0.1", f"--port={GCS_PORT}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}",
                f"--num-cpus={NUM_CPUS}", f"--num-gpus={NUM_GPUS}",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--temp-dir={self.temp}", "--disable-usage-stats",
            ],
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ray start failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        ready = self.run([self.python, "-c", _READY, self.dashboard, str(timeout)], timeout=timeout + 10)
        if ready.returncode != 0:
            raise RuntimeError(ready.stderr or ready.stdout)

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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = RayCluster(env={SECRET_NAME: SECRET_VALUE})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
