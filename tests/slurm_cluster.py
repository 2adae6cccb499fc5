"""A throwaway one-node SLURM cluster on this machine, for tests.

    with SlurmCluster(partition="main") as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env())

It needs Debian's packages (`apt-get install -y --no-install-recommends slurmd slurmctld
slurm-client munge`) and root (the daemons run as SlurmUser=root). Everything lives in a new
folder under /tmp: its own munge key and munged socket, a slurm.conf on free ports, state and
logs; `SLURM_CONF` (in `env()`) points every client at it, so nothing under /etc is read or
written. The daemons run in the foreground as children of this process and are always stopped
on exit (running jobs cancelled first) and the folder is removed (`keep_logs_in` keeps a copy
of the daemons' logs).

No cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none) and no accounting
database (AccountingStorageType=accounting_storage/none, so `sacct` answers "accounting
storage is disabled"): job states come from `squeue --states=all`, which keeps finished
jobs for MinJobAge=3600 s, and slurmctld writes one line per finished job to
log/jobcomp.txt (JobCompType=jobcomp/filetxt).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

APT_PACKAGES = "slurmd slurmctld slurm-client munge"
APT_COMMAND = f"apt-get install -y --no-install-recommends {APT_PACKAGES}"
# (program, Debian package)
PROGRAMS = [
    ("munged", "munge"),
    ("mungekey", "munge"),
    ("slurmctld", "slurmctld"),
    ("slurmd", "slurmd"),
    ("sbatch", "slurm-client"),
    ("srun", "slurm-client"),
    ("squeue", "slurm-client"),
    ("sinfo", "slurm-client"),
    ("scancel", "slurm-client"),
    ("scontrol", "slurm-client"),
]


class SlurmClusterError(RuntimeError):
    pass


def missing_programs() -> list[str]:
    return [f"{prog} (Debian package {pkg})" for prog, pkg in PROGRAMS if shutil.which(prog) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """What slurmd detects on this machine (`slurmd -C`): the node is declared exactly so,
    with 90% of its memory, so slurmctld never drains it for a mismatch."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    hw = {k: int(fields[k]) for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")}
    hw["RealMemory"] = int(int(fields["RealMemory"]) * 0.9)
    return hw


class SlurmCluster:
    def __init__(self, partition: str = "main", keep_logs_in: Path | None = None, startup_timeout: float = 300.0):
        self.partition = partition
        self.keep_logs_in = keep_logs_in
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.hostname = socket.gethostname().split(".")[0]
        self.hardware: dict[str, int] = {}

    # -- paths -------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def jobcomp(self) -> Path:
        return self.log_dir / "jobcomp.txt"

    def env(self, base: dict | None = None) -> dict:
        """Environment for clients and for Snakemake: SLURM_CONF, and bin/ first on PATH.

        bin/srun sets SLURM_CONF itself: the slurm executor's job step (snakemake-executor-
        plugin-slurm-jobstep) drops every inherited SLURM_* variable before it calls `srun`
        inside a job, where a real cluster's srun would read /etc/slurm/slurm.conf."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        missing = missing_programs()
        if missing:
            raise SlurmClusterError(
                "the SLURM test cluster needs Debian's slurm and munge packages; missing: "
                + ", ".join(missing)
                + f".\nInstall them with: {APT_COMMAND}"
            )
        if os.geteuid() != 0:
            raise SlurmClusterError("the SLURM test cluster runs its daemons as SlurmUser=root: run the test as root")
        # A short path: munged's socket path must stay under the 108-byte limit.
        self.root = Path(tempfile.mkdtemp(prefix="vitprobe-slurm-"))
        try:
            self._write_configs()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
                self._cancel_jobs()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):  # reverse start order
                process = self.processes.pop(name, None)
                if process is not None:
                    stop(process)
            if self.root is not None:
                if self.keep_logs_in is not None and self.log_dir.exists():
                    shutil.copytree(self.log_dir, self.keep_logs_in, dirs_exist_ok=True)
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    # -- internals ---------------------------------------------------------------------------
    def _write_configs(self) -> None:
        root = self.root
        for sub, mode in (
            ("etc", 0o700),
            ("run", 0o755),
            ("log", 0o755),
            ("state", 0o700),
            ("spool", 0o755),
            ("spool/slurmd", 0o755),
            ("bin", 0o755),
        ):
            (root / sub).mkdir(mode=mode)
            os.chmod(root / sub, mode)  # mkdir's mode is masked by the umask
        os.chmod(root, 0o755)  # munged: the socket's directories must be searchable by all
        subprocess.run(["mungekey", "--create", "--keyfile", str(root / "etc" / "munge.key")], check=True, capture_output=True)
        self.hardware = hw = node_hardware()
        node = " ".join(f"{k}={v}" for k, v in hw.items())
        self.conf.write_text(f"""\
ClusterName=vitprobe-test
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.hostname} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName={self.partition} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP
""")
        srun = root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{shutil.which("srun")}" "$@"\n')
        srun.chmod(0o755)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.stdout", "ab")
        self.processes[name] = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,  # a Ctrl-C of pytest reaches us, not them
        )
        log.close()

    def _start(self) -> None:
        root = self.root
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={root}/run/munge.socket",
                f"--key-file={root}/etc/munge.key",
                f"--pid-file={root}/run/munged.pid",
                f"--log-file={root}/log/munged.log",
                f"--seed-file={root}/etc/munged.seed",
            ],
        )
        self._wait(lambda: (root / "run" / "munge.socket").exists(), "munged to create its socket", "munged")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", f"node {self.hostname} to become idle", "slurmctld", "slurmd")

    def _wait(self, ready, what: str, *daemons: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for name in daemons:
                if self.processes[name].poll() is not None:
                    raise SlurmClusterError(
                        f"{name} exited with {self.processes[name].returncode} while waiting for {what}\n{self.logs()}"
                    )
            if ready():
                return
            time.sleep(0.25)
        raise SlurmClusterError(f"timed out after {self.startup_timeout} s waiting for {what}\n{self.logs()}")

    def node_state(self) -> str:
        result = self.run("sinfo", "-h", "-N", "-n", self.hostname, "-o", "%T", check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env(), check=check, timeout=60)

    def jobs(self) -> list[dict]:
        """Every job slurmctld still knows (finished ones included, for MinJobAge)."""
        fmt = "%i|%j|%k|%C|%m|%l|%P|%T"
        keys = ["id", "name", "comment", "cpus", "min_memory", "time_limit", "partition", "state"]
        out = self.run("squeue", "-h", "--states=all", "-o", fmt).stdout
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]

    def _cancel_jobs(self) -> None:
        self.run("scancel", "--user", "root", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            active = self.run("squeue", "-h", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING", "-o", "%i", check=False)
            if active.returncode or not active.stdout.strip():
                return
            time.sleep(0.5)

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*")) if self.root is not None else []:
            if path.is_file() and path != self.jobcomp:
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name} (last {tail} lines)\n" + "\n".join(lines))
        return "\n".join(parts)


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within timeout."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
