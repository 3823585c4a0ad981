"""Start real services (Redis, PostgreSQL, an S3 API server, Celery workers) on loopback for tests."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "{{ cookiecutter.project_slug }}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class ServiceUnavailableError(RuntimeError):
    """A service the tests need could not be found or started."""


def unavailable(message: str) -> None:
    """Fail under CI (a missing service is a broken machine there); skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true, or raise naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts TCP connections on ``host``:``port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def find_binary(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """Return the path of ``name`` on PATH or in ``extra_dirs``."""
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        for candidate in sorted(Path("/").glob(directory.lstrip("/")), reverse=True):
            if (candidate / name).exists():
                return str(candidate / name)
    return None


@dataclass
class Process:
    """A child process with its log file, stopped for good at the end."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path = PROJECT_DIR
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> Process:
        """Start the process in its own process group."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Return whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Return what the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process itself."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children left behind by a killed parent
        if self._log:
            self._log.close()


class TcpProxy:
    """A TCP relay from a port of its own on 127.0.0.1 to ``target_port`` that can cut the line.

    ``cut()`` drops every relayed connection and refuses new ones, as a database restart or a network
    partition would for the clients using the proxy and for no one else; ``restore()`` lets them in again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until ``restore()``."""
        self._open.clear()
        with self._lock:
            for end in self._sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self._sockets.clear()

    def restore(self) -> None:
        """Relay new connections again."""
        self._open.set()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._server.close()
        self.cut()


@contextlib.contextmanager
def redis_server(workdir: Path, host: str = "127.0.0.1", prefix: Sequence[str] = ()) -> Iterator[str]:
    """Run ``redis-server`` on a free port of ``host`` (inside ``prefix``, e.g. ``ip netns exec``); yield its URL."""
    binary = find_binary("redis-server")
    if binary is None:
        raise ServiceUnavailableError("redis-server is not installed (apt-get install redis-server)")
    port = free_port() if not prefix else 6379  # a namespace of its own has every port free
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if host != "127.0.0.1":
        argv += ["--protected-mode", "no"]  # other test hosts connect; the network is the test's own
    proc = Process([*prefix, *argv], workdir / "redis.log").start()
    try:
        wait_until(lambda: port_open(port, host) or not proc.alive(), 20, "redis-server to listen")
        if not proc.alive():
            raise ServiceUnavailableError(f"redis-server exited: {proc.log()[-2000:]}")
        yield f"redis://{host}:{port}/0"
    finally:
        proc.stop()


@contextlib.contextmanager
def postgres_server(workdir: Path, host: str = "127.0.0.1", prefix: Sequence[str] = ()) -> Iterator[str]:
    """Run PostgreSQL from a fresh ``initdb`` on a free port of ``host`` (inside ``prefix``); yield its ``app`` URL."""
    pg_dirs = ("/usr/lib/postgresql/*/bin",)
    initdb, pg_ctl = find_binary("initdb", pg_dirs), find_binary("pg_ctl", pg_dirs)
    if initdb is None or pg_ctl is None:
        raise ServiceUnavailableError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    data = workdir / "pgdata"
    port = free_port() if not prefix else 5432  # a namespace of its own has every port free
    env = dict(os.environ)
    run_as: list[str] = [*prefix]
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use an unprivileged user
        run_as += ["runuser", "-u", "nobody", "--"]
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(workdir, "nobody")
    workdir.mkdir(parents=True, exist_ok=True)
    createdb = find_binary("createdb", pg_dirs) or "createdb"
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "app", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        env=env,
    )
    if host != "127.0.0.1":  # the other hosts of a test network connect; the network is the test's own
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
    options = f"-k {workdir} -h {host} -p {port} -c fsync=off -c full_page_writes=off -c max_connections=200"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(workdir / "postgres.log"), "-w", "start"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        subprocess.run(
            [*run_as, createdb, "-h", host, "-p", str(port), "-U", "app", "app"],
            check=True,
            capture_output=True,
        )
        yield f"postgres://app@{host}:{port}/app"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False)


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[str]:
    """Run moto's S3 API server on a free port; yield its endpoint URL."""
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(moto).exists():
        raise ServiceUnavailableError("moto_server is not installed (moto[server] is a dev dependency)")
    port = free_port()
    proc = Process([moto, "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log").start()
    try:
        wait_until(lambda: port_open(port) or not proc.alive(), 30, "moto_server to listen")
        if not proc.alive():
            raise ServiceUnavailableError(f"moto_server exited: {proc.log()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


#: Where Debian's package keeps RabbitMQ's own scripts (``/usr/sbin/rabbitmq-server`` switches to the
#: ``rabbitmq`` user and its system data dir; the tests run a node of their own instead).
RABBITMQ_DIRS = ("/usr/lib/rabbitmq/bin",)


@dataclass
class RabbitNode:
    """One RabbitMQ node on loopback: its own node name, ports, data dir, cookie and configuration."""

    workdir: Path
    name: str
    amqp_port: int
    dist_port: int
    management_port: int
    epmd_port: int
    consumer_timeout_ms: int
    process: Process | None = None

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}/"

    def env(self) -> dict[str, str]:
        """Return the environment RabbitMQ's scripts (server and rabbitmqctl) need for this node."""
        home = self.workdir / "home"
        return {
            **os.environ,
            # The Erlang cookie lives in HOME: a private one keeps the node apart from any other on the machine.
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(self.workdir / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            # A port mapper of the tests' own: stopping it cannot disturb a system RabbitMQ.
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def write_files(self, cookie: str) -> None:
        """Write the node's configuration, plugins list and Erlang cookie."""
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        (self.workdir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
                    "loopback_users = none",
                    "management.tcp.ip = 127.0.0.1",
                    # Queue counts in the management API refresh every half second, not every five.
                    "collect_statistics_interval = 500",
                    f"management.tcp.port = {self.management_port}",
                    # The server closes the channel of a consumer holding a message longer than this (ms).
                    f"consumer_timeout = {self.consumer_timeout_ms}",
                    "disk_free_limit.absolute = 50MB",
                    "log.console = false",
                    "log.file.level = warning",
                    "",
                ]
            )
        )
        # Quorum queues report their counts to the management API on every tick (5 s by default).
        (self.workdir / "advanced.config").write_text("[{rabbit, [{quorum_tick_interval, 500}]}].\n")
        (self.workdir / "rabbitmq-env.conf").write_text("")
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")

    def start(self) -> RabbitNode:
        """Start the node (its data dir is kept across restarts); :meth:`wait_ready` waits for it."""
        self.process = Process([_rabbitmq_script("rabbitmq-server")], self.workdir / "server.log", env=self.env())
        self.process.start()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until the node accepts AMQP connections, or raise with its log."""
        proc = self.process
        assert proc is not None
        wait_until(lambda: port_open(self.amqp_port) or not proc.alive(), timeout, f"RabbitMQ {self.name} to listen")
        if not proc.alive():
            raise ServiceUnavailableError(f"rabbitmq-server {self.name} exited: {proc.log()[-3000:]}")

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl`` against this node and return its output."""
        argv = [_rabbitmq_script("rabbitmqctl"), "-n", self.nodename, *args]
        done = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def stop(self) -> None:
        """Stop the node (SIGTERM to its process group, SIGKILL after 20 s)."""
        if self.process is not None:
            self.process.stop(timeout=20)

    def stop_port_mapper(self) -> None:
        """Stop the Erlang port mapper the node started on its private port (it outlives the node)."""
        epmd = find_binary("epmd", ("/usr/lib/erlang/erts-*/bin",))
        if epmd:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], capture_output=True, check=False, timeout=10)


def _rabbitmq_script(name: str) -> str:
    path = Path(RABBITMQ_DIRS[0]) / name
    if not path.exists():
        raise ServiceUnavailableError(f"{name} is not installed (apt-get install rabbitmq-server)")
    return str(path)


#: What the harness's RabbitMQ sets ``consumer_timeout`` to, in seconds: above the test pools' leases.
TEST_CONSUMER_TIMEOUT = 60


def rabbit_node(
    workdir: Path, name: str, cookie: str, epmd_port: int | None = None, consumer_timeout: int = TEST_CONSUMER_TIMEOUT
) -> RabbitNode:
    """Return a RabbitMQ node on free loopback ports with its files written (not started)."""
    node = RabbitNode(
        workdir=workdir,
        name=name,
        amqp_port=free_port(),
        dist_port=free_port(),
        management_port=free_port(),
        epmd_port=epmd_port or free_port(),
        consumer_timeout_ms=consumer_timeout * 1000,
    )
    node.write_files(cookie)
    return node


@contextlib.contextmanager
def rabbitmq_server(workdir: Path, consumer_timeout: int = TEST_CONSUMER_TIMEOUT) -> Iterator[RabbitNode]:
    """Run one ``rabbitmq-server`` node on free loopback ports with its own data dir and cookie; yield it.

    ``consumer_timeout`` (seconds) goes to its rabbitmq.conf, as a deployment's must (README.md).
    """
    _rabbitmq_script("rabbitmq-server")
    cookie = f"cookie{os.getpid()}{time.time_ns()}"
    node = rabbit_node(workdir, f"test-{os.getpid()}", cookie, consumer_timeout=consumer_timeout)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        node.stop_port_mapper()


@dataclass
class SentinelGroup:
    """A Redis master, its replica and one Sentinel watching them, each on a free loopback port."""

    master: Process
    replica: Process
    sentinel: Process
    master_port: int
    replica_port: int
    sentinel_port: int
    master_name: str = "mymaster"

    @property
    def url(self) -> str:
        """Return the ``sentinel://`` URL kombu and Celery take for the broker and the result backend."""
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def current_master_port(self) -> int | None:
        """Return the port of the server the Sentinel names as master now."""
        import redis

        client = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        try:
            found = client.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
        except redis.RedisError:
            return None
        return int(found[1]) if found else None

    def knows_the_replica(self) -> bool:
        """Return whether the Sentinel lists the replica as a healthy one (it learns replicas from the master)."""
        import redis

        client = redis.Redis(port=self.sentinel_port, socket_timeout=2, decode_responses=True)
        try:
            replicas = client.sentinel_slaves(self.master_name)
        except redis.RedisError:
            return False
        return any(
            int(r.get("port", 0)) == self.replica_port
            and r.get("master-link-status") == "ok"
            and r.get("is_slave")
            and not r.get("is_sdown")
            for r in replicas
        )


@contextlib.contextmanager
def redis_sentinel_group(workdir: Path) -> Iterator[SentinelGroup]:
    """Run a Redis master, a replica of it and a Sentinel that fails over within seconds; yield them."""
    server, sentinel = find_binary("redis-server"), find_binary("redis-sentinel")
    if server is None or sentinel is None:
        raise ServiceUnavailableError("redis-server and redis-sentinel are needed (apt-get install redis-sentinel)")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"master": free_port(), "replica": free_port(), "sentinel": free_port()}
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    started: list[Process] = []
    try:
        for role in ("master", "replica"):
            (workdir / role).mkdir(exist_ok=True)
            argv = [server, "--port", str(ports[role]), *common, "--dir", str(workdir / role)]
            if role == "replica":
                argv += ["--replicaof", "127.0.0.1", str(ports["master"])]
            started.append(Process(argv, workdir / f"{role}.log").start())
        # Sentinel rewrites its configuration file as it learns the group: it must be a writable file of its own.
        config = workdir / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {ports['sentinel']}",
                    "bind 127.0.0.1",
                    f"dir {workdir}",
                    f"sentinel monitor mymaster 127.0.0.1 {ports['master']} 1",
                    "sentinel down-after-milliseconds mymaster 1000",
                    "sentinel failover-timeout mymaster 5000",
                    "",
                ]
            )
        )
        started.append(Process([sentinel, str(config)], workdir / "sentinel.log").start())
        for role, port in ports.items():
            wait_until(partial(port_open, port), 20, f"the {role} on port {port} to listen")
        master, replica, watcher = started
        group = SentinelGroup(master, replica, watcher, ports["master"], ports["replica"], ports["sentinel"])
        wait_until(lambda: group.current_master_port() == ports["master"], 20, "the Sentinel to know the master")
        # Sentinel asks the master for its replicas every 10 s: until it has, a failover finds no replica.
        wait_until(group.knows_the_replica, 30, "the Sentinel to know the replica", interval=0.5)
        yield group
    finally:
        for proc in started:
            proc.stop()


@contextlib.contextmanager
def rabbitmq_cluster(workdir: Path, size: int = 3) -> Iterator[list[RabbitNode]]:
    """Run ``size`` RabbitMQ nodes on loopback that form one cluster (one cookie, one port mapper); yield them."""
    _rabbitmq_script("rabbitmq-server")
    cookie = f"cluster{os.getpid()}{time.time_ns()}"
    epmd_port = free_port()
    nodes = [rabbit_node(workdir / f"node{i}", f"c{i}-{os.getpid()}", cookie, epmd_port) for i in range(size)]
    try:
        for node in nodes:  # started together: on two cores the boots overlap instead of adding up
            node.start()
        for node in nodes:
            node.wait_ready()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].nodename)
            node.ctl("start_app")
        yield nodes
    finally:
        # Stopped together as well: one by one, each node waits for the others' quorum members in turn.
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as stopping:
            list(stopping.map(RabbitNode.stop, nodes))
        nodes[0].stop_port_mapper()
