"""A SLURM cluster of one or more nodes on this machine, for the slurm target's engine tests.

`SlurmCluster` writes a slurm.conf into a fresh folder, starts munged (as the munge user, on its
own socket), slurmctld and one slurmd per node on free loopback ports, waits until `sinfo`
shows every node idle, and stops every daemon by its pid. One node is called localhost
(`slurmd -N localhost`). With `nodes=2` they are n1 and n2: two slurmd daemons on this host
(`slurmd -N n1`, `slurmd -N n2`; Debian's slurmd runs several per host this way), each with its
own port, and spool folder, pid and log file (`%n` in slurm.conf), both `NodeHostname=localhost
NodeAddr=127.0.0.1`. Nothing is shared with a system-wide SLURM or munge: the socket, pid, log,
state and spool files all live in the cluster's folder, so two test sessions can run side by side.

Every node declares GPUs (`GresTypes=gpu`, node `Gres=gpu:A10G:2`) over placeholder device files: a
gres.conf with `AutoDetect=off` names `dev/nvidia0`, `dev/nvidia1` in the cluster's folder (links to
/dev/null: SLURM checks for a character device), so SLURM schedules and allocates GPUs
(SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES) on a machine that has none. Nothing opens those files.

`slurm_cluster` (one node) and `slurm_two_nodes` are module-scoped pytest fixtures (import them into a
test module: a cluster lives while its module runs); they skip with the reason when the Debian packages are not installed
(`.ci/slurm-setup.sh` installs them). The packages: slurmctld slurmd slurm-client munge (SLURM 22.05
on Debian 12).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SBIN = Path("/usr/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
}

SLURM_CONF = """\
ClusterName=ftctest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
GresTypes=gpu
ReturnToService=2
MinJobAge=600
KillWait=10
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmctldPidFile={root}/slurmctld.pid
StateSaveLocation={root}/spool/ctld
SlurmctldLogFile={root}/log/slurmctld.log
{slurmd_files}
{node_lines}
PartitionName=debug Nodes={node_list} Default=YES MaxTime=INFINITE State=UP
"""
ONE_SLURMD_FILES = """\
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool/slurmd
SlurmdLogFile={root}/log/slurmd.log"""
SLURMD_FILES = """\
SlurmdPidFile={root}/slurmd-%n.pid
SlurmdSpoolDir={root}/spool/slurmd-%n
SlurmdLogFile={root}/log/slurmd-%n.log"""
NODE_LINE = "NodeName={name}{where} CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpu_type}:{gpus} State=UNKNOWN"
GRES_CONF = """\
AutoDetect=off
NodeName={node_list} Name=gpu Type={gpu_type} File={files}
"""
GPUS = 2
GPU_TYPE = "A10G"


def missing_binaries() -> list[str]:
    """The SLURM and munge programs this machine lacks (empty when the cluster can start)."""
    missing = [d for d in DAEMONS if not (SBIN / d).exists() and shutil.which(d) is None]
    missing += [c for c in CLIENTS if shutil.which(c) is None]
    return missing


def skip_reason() -> str | None:
    """Why the engine tests cannot run here, or None."""
    missing = missing_binaries()
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing); run .ci/slurm-setup.sh "
            "(Debian packages slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (it starts munged as the munge user and slurmd as root)"
    if not MUNGE_KEY.exists():
        return f"{MUNGE_KEY} is missing (the munge package's postinst writes it)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _daemon(name: str) -> str:
    return str(SBIN / name) if (SBIN / name).exists() else str(shutil.which(name))


class SlurmCluster:
    """`nodes` nodes (localhost alone, else n1, n2, ...), each with `cpus` CPUs and `gpus` declared GPUs of
    `gpu_type`, daemons on loopback ports."""

    def __init__(
        self, root: Path, cpus: int = 2, memory_mb: int = 8000, gpus: int = GPUS, gpu_type: str = GPU_TYPE, nodes: int = 1
    ) -> None:
        self.root = root
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.gpus = gpus
        self.gpu_type = gpu_type
        self.node_names = ["localhost"] if nodes == 1 else [f"n{i}" for i in range(1, nodes + 1)]
        self.conf = root / "slurm.conf"
        self.munge_dir = root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment (as it is now), pointed at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def _one_node(self) -> bool:
        return self.node_names == ["localhost"]

    # ----------------------------------------------------------------- life cycle

    def start(self, timeout: float = 60) -> None:
        for sub in ("log", "spool/slurmd", "spool/ctld"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged runs as the munge user and must reach its folder
        self._start_munged()
        self.conf.write_text(
            SLURM_CONF.format(
                root=self.root,
                munge_socket=self.munge_socket,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                slurmd_files=(ONE_SLURMD_FILES if self._one_node else SLURMD_FILES).format(root=self.root),
                node_lines="\n".join(self._node_line(name) for name in self.node_names),
                node_list=",".join(self.node_names),
            )
        )
        self._write_gres()
        self._start("slurmctld", [_daemon("slurmctld")], self.root / "slurmctld.pid")
        for name in self.node_names:
            self.start_slurmd(name)
        self._wait_idle(timeout)

    def _node_line(self, name: str) -> str:
        """The NodeName line: localhost by its address; n1, n2, ... on this host, each on its own slurmd port."""
        where = " NodeAddr=127.0.0.1" if self._one_node else f" NodeHostname=localhost NodeAddr=127.0.0.1 Port={_free_port()}"
        return NODE_LINE.format(
            name=name, where=where, cpus=self.cpus, memory_mb=self.memory_mb, gpus=self.gpus, gpu_type=self.gpu_type
        )

    def slurmd_pid_file(self, node: str) -> Path:
        """Where the slurmd of `node` writes its pid (SlurmdPidFile, %n expanded)."""
        return self.root / ("slurmd.pid" if self._one_node else f"slurmd-{node}.pid")

    def start_slurmd(self, node: str) -> None:
        """Start the slurmd of `node` (`slurmd -N node`); its pid is kept as `slurmd:node`."""
        pid_file = self.slurmd_pid_file(node)
        pid_file.unlink(missing_ok=True)  # a pid file left by a killed slurmd is not this one's
        self._start(f"slurmd:{node}", [_daemon("slurmd"), "-N", node], pid_file)

    def kill_slurmd(self, node: str) -> None:
        """SIGKILL the slurmd of `node`, as a crash would (its job steps' slurmstepd keep running)."""
        pid = self.pids.pop(f"slurmd:{node}")
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 15)

    def _write_gres(self) -> None:
        """gres.conf next to slurm.conf: the node's GPUs are empty placeholder files, never autodetected."""
        devices = self.root / "dev"
        devices.mkdir()
        files = [devices / f"nvidia{i}" for i in range(self.gpus)]
        for file in files:
            file.symlink_to("/dev/null")  # SLURM wants a character device; no program opens it
        (self.root / "gres.conf").write_text(
            GRES_CONF.format(node_list=",".join(self.node_names), gpu_type=self.gpu_type, files=",".join(map(str, files)))
        )

    def _start_munged(self) -> None:
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o755)  # munged: clients need execute permission on the socket folder
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        cmd = [
            "runuser", "-u", "munge", "--", _daemon("munged"),
            f"--socket={self.munge_socket}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
            f"--key-file={MUNGE_KEY}",
        ]
        self._start("munged", cmd, self.munge_dir / "munged.pid")

    def _start(self, name: str, cmd: list[str], pid_file: Path, timeout: float = 20) -> None:
        """Run a daemon that forks into the background, and read its pid file."""
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{name} did not start (exit {result.returncode}): {result.stderr.strip()}{self._logs()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):  # not written yet, or half-written
                self.pids[name] = int(pid_file.read_text().split()[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} wrote no pid file {pid_file}{self._logs()}")

    def _wait_idle(self, timeout: float) -> None:
        self.wait_nodes({"idle"}, timeout)

    def wait_nodes(self, states: set[str], timeout: float = 60) -> None:
        """Wait until `sinfo` shows every node in one of `states` (e.g. {"idle"} after a slurmd restart)."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            result = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
            shown = result.stdout.strip()
            seen = dict(line.split() for line in shown.splitlines() if len(line.split()) == 2)
            if result.returncode == 0 and sorted(seen) == sorted(self.node_names) and set(seen.values()) <= states:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the nodes are not {'/'.join(sorted(states))} after {timeout:.0f} s (sinfo says {shown!r}){self._logs()}")

    def stop(self) -> None:
        """Stop every slurmd, then slurmctld and munged, by pid; wait for each to exit."""
        slurmds = [name for name in self.pids if name.startswith("slurmd:")]
        for name in (*slurmds, "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 15):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _logs(self) -> str:
        parts = []
        for log in (*sorted((self.root / "log").glob("*.log")), self.munge_dir / "munged.log"):
            with contextlib.suppress(OSError):
                parts.append(f"\n--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return "".join(parts)

    # ----------------------------------------------------------------- clients

    def run(self, cmd: list[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """A SLURM client command against this cluster."""
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {result.returncode}): {result.stderr.strip()}")
        return result

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, StdOut, ...)."""
        text = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        fields: dict[str, str] = {}
        for word in text.split():
            key, eq, value = word.partition("=")
            if eq:
                fields[key] = value
        return fields

    def wait(self, job_id: str, timeout: float = 300, states: set[str] = FINAL_STATES) -> dict[str, str]:
        """Wait until the job reaches one of `states`; returns its fields."""
        deadline = time.monotonic() + timeout
        info = self.job(job_id)
        while info.get("JobState") not in states:
            if time.monotonic() > deadline:
                self.run(["scancel", job_id], check=False)
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s{self._logs()}")
            time.sleep(0.5)
            info = self.job(job_id)
        return info


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False


@contextlib.contextmanager
def running_cluster(cpus: int = 2, memory_mb: int = 8000, nodes: int = 1) -> Iterator[SlurmCluster]:
    """A started cluster in a fresh folder under the system temp dir, stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ftc-slurm-"))
    cluster = SlurmCluster(root, cpus=cpus, memory_mb=memory_mb, nodes=nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The one-node cluster for this test module; SLURM_CONF points at it while it runs."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster() as cluster:
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            yield cluster
        finally:
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="module")
def slurm_two_nodes() -> Iterator[SlurmCluster]:
    """The two-node cluster (n1, n2) for this test module. SLURM_CONF is left alone: use `cluster.env`
    (`cluster.run` does), so the one-node cluster's tests keep theirs."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster(nodes=2) as cluster:
        yield cluster
