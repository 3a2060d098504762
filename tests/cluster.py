"""Throwaway real servers for the cluster tests and bench/scale.py: a local
Ray cluster (a head and worker nodes, each `ray start --block` in its own
process group) and a PostgreSQL server (initdb/pg_ctl in a temporary
directory). Everything listens on 127.0.0.1 and is stopped by the process
ids we started, never by name (`ray stop` would stop every Ray on the
machine)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

# A worker node registers with the head within RAY_raylet_start_wait_time_s
# or exits; Ray's default was too short beside the suite's other tests on 2
# cores ("The node registration may not be complete yet before the timeout").
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_raylet_start_wait_time_s": "90"}


class NetNamespace:
    """A network namespace with only the loopback interface. Ray replaces
    127.0.0.1 with the machine's network address wherever it can; in here
    there is none, so every node, the driver and the object store talk over
    127.0.0.1 of the namespace and nothing leaves the machine. Needs root
    (`ip netns`), as CI has."""

    def __init__(self):
        self.name = f"autopilot-{os.getpid()}-{free_port()}"

    def __enter__(self) -> "NetNamespace":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, args)]


def netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """`ray start --head --num-cpus 0` (the driver's machine: no trials) and
    worker nodes of `cpus` CPUs each. kill_node() is a machine dying: the
    node's whole process group gets SIGKILL."""

    def __init__(self, workdir: Path, netns: NetNamespace):
        self.netns = netns
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **LOOPBACK_ENV}
        self.head: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        # Nodes on one machine each need their own folder: their sockets
        # would collide in a shared one.
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.temp_dirs.append(temp)
        if "--node-manager-port" not in args:
            args = [*args, "--node-manager-port", str(free_port())]
        common = ["--block", "--disable-usage-stats", "--temp-dir", temp, "--object-manager-port", str(free_port()),
                  "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                  "--runtime-env-agent-port", str(free_port()), "--object-store-memory", str(200 * 2**20)]
        return subprocess.Popen(self.netns.cmd(BIN / "ray", "start", *args, *common), env=self.env,
                                start_new_session=True,
                                stdout=open(self.workdir / log, "w"), stderr=subprocess.STDOUT)

    def start(self, n_nodes: int, cpus: int = 1, timeout: float = 180) -> "RayCluster":
        self.head = self._start(["--head", "--port", str(self.port), "--num-cpus", "0",
                                 "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
                                 "--include-dashboard", "false"], "head.log")
        self.wait_for_gcs(timeout)
        for _ in range(n_nodes):
            self.add_node(cpus)
        self.wait_for_cpus(n_nodes * cpus, timeout)
        return self

    def add_node(self, cpus: int = 1) -> subprocess.Popen:
        port = free_port()
        node = self._start(["--address", self.address, "--num-cpus", str(cpus), "--node-manager-port", str(port)],
                           f"node{len(self.nodes)}.log")
        node.node_manager_port = port
        self.nodes.append(node)
        return node

    def node_ids(self) -> dict[str, int]:
        """Ray node id -> index in self.nodes."""
        out = subprocess.run(self.netns.cmd(BIN / "python", "-c", _NODES, self.address), env=self.env,
                             capture_output=True, text=True, timeout=120)
        ports = {p.node_manager_port: i for i, p in enumerate(self.nodes)}
        ids = {}
        for line in out.stdout.split():
            node_id, port = line.split(",")
            if int(port) in ports:
                ids[node_id] = ports[int(port)]
        return ids

    def wait_for_gcs(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray head exited: {(self.workdir / 'head.log').read_text()[-2000:]}")
            probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), timeout=1)"
            if subprocess.run(self.netns.cmd(sys.executable, "-c", probe), capture_output=True).returncode == 0:
                return
            time.sleep(1)
        raise TimeoutError("ray head did not start")

    def cpus(self) -> float:
        """CPUs of alive nodes, asked with `ray status` (no driver needed)."""
        out = subprocess.run(self.netns.cmd(BIN / "python", "-c", _CPUS, self.address), env=self.env, capture_output=True,
                             text=True, timeout=120)
        return float(out.stdout.strip() or 0)

    def wait_for_cpus(self, n: float, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            for i, node in enumerate(self.nodes):
                if node.poll() is not None and node.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"ray node {i} exited: {(self.workdir / f'node{i}.log').read_text()[-2000:]}")
            if self.cpus() >= n:
                return
            time.sleep(3)
        raise TimeoutError(f"the cluster did not reach {n} CPUs")

    def kill_node(self, i: int) -> None:
        os.killpg(self.nodes[i].pid, signal.SIGKILL)
        self.nodes[i].wait()

    def stop(self) -> None:
        # A throwaway cluster: no draining (ray start --block would wait 30 s
        # on SIGTERM); each node's whole process group goes at once.
        for p in [*self.nodes, self.head]:
            if p is not None:
                _signal_group(p, signal.SIGKILL)
                p.wait()
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


_NODES = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for n in ray.nodes():
    print(f"{n['NodeID']},{n['NodeManagerPort']}")
"""

_CPUS = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(ray.cluster_resources().get("CPU", 0))
"""


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    matches = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return matches[-1] if matches else None


class Postgres:
    """A PostgreSQL server in a temporary directory on a free port of
    127.0.0.1. PostgreSQL refuses to run as root, so as root it runs as the
    `postgres` user of the Debian package (or `nobody`)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="autopilot-pg-", dir="/tmp"))
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
        self.url = f"postgresql+psycopg://autopilot@127.0.0.1:{self.port}/autopilot"

    def _run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        def demote():
            if self.user is not None:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        return subprocess.run(list(args), preexec_fn=demote, capture_output=True, text=True, check=True,
                              cwd=self.dir, **kw)

    def start(self) -> "Postgres":
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        data = self.dir / "data"
        self._run(initdb, "-D", str(data), "-U", "autopilot", "--auth=trust", "--no-sync", "-E", "UTF8")
        # fsync off: a throwaway test server; listen on loopback only, socket in our folder.
        self._run(pg_ctl, "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start", "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.dir} -F -c max_connections=50")
        createdb = pg_bin("createdb")
        self._run(createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "autopilot", "autopilot")
        return self

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        try:
            self._run(pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
