"""Local, real infrastructure for development, the demo and the tests.

``nudgestream services up`` starts, on loopback:

* an **Apache Kafka 3.9.1 broker in KRaft mode** (one node acting as broker and
  controller, no ZooKeeper), whose jars are fetched once from Maven Central with
  ``mvn dependency:copy-dependencies`` into a cache folder and run on the machine's Java 17;
* a **Redis server** (Debian's ``redis-server``), with append-only persistence so rate
  limits survive a Redis restart.

Everything lives under one state folder (logs, data, PID files). ``up`` is idempotent (a
running service is left alone), waits until both answer, and ``down`` stops exactly the
processes it started, by PID.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from load.local_settings import DEFAULT_CACHE_DIR, load_local_services

KAFKA_VERSION = "3.9.1"
_POM = Path(__file__).with_name("kafka") / "pom.xml"


class ServiceError(RuntimeError):
    """A local service could not be installed, started or stopped."""


@dataclass(frozen=True)
class LocalServices:
    """Where the local services live and listen (all on loopback)."""

    state_dir: Path
    kafka_port: int = 19092
    controller_port: int = 19093
    redis_port: int = 16379
    cache_dir: Path = DEFAULT_CACHE_DIR
    kafka_heap: str = "768m"
    #: (user, password) pairs: when given, the client listener is SASL_PLAINTEXT with the
    #: PLAIN mechanism and these users (the first one is also the broker's own identity);
    #: otherwise it is PLAINTEXT. For tests of client authentication.
    kafka_sasl_users: tuple[tuple[str, str], ...] = ()
    #: When set, Redis requires this password (``AUTH``) and ``redis_url`` carries it.
    redis_password: str = ""

    @classmethod
    def from_env(cls) -> LocalServices:
        """From ``NUDGESTREAM_SERVICES_DIR``, ``NUDGESTREAM_LOCAL_*_PORT`` and
        ``NUDGESTREAM_CACHE_DIR`` (listed by ``nudgestream config``)."""
        local = load_local_services()
        return cls(
            state_dir=local.services_dir,
            kafka_port=local.kafka_port,
            controller_port=local.controller_port,
            redis_port=local.redis_port,
            cache_dir=local.cache_dir,
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_protocol(self) -> str:
        """The security protocol clients must use on ``kafka_bootstrap``."""
        return "SASL_PLAINTEXT" if self.kafka_sasl_users else "PLAINTEXT"

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"


Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def up(services: LocalServices, say: Say = _print, timeout_s: float = 90.0) -> None:
    """Start Kafka and Redis unless already running; return once both answer."""
    services.state_dir.mkdir(parents=True, exist_ok=True)
    _start_redis(services, say)
    _start_kafka(services, say)
    _wait_for_port("redis", services.redis_port, services, timeout_s)
    _wait_for_kafka(services, timeout_s)
    say(f"kafka  ready at {services.kafka_bootstrap} (Apache Kafka {KAFKA_VERSION}, KRaft)")
    say(f"redis  ready at {services.redis_url}")


def down(services: LocalServices, say: Say = _print) -> None:
    """Stop the processes ``up`` started (by PID), Kafka first so it can flush."""
    for name in ("kafka", "redis"):
        pid = _running_pid(services, name)
        if pid is None:
            say(f"{name:6} not running")
            services.pid_file(name).unlink(missing_ok=True)
            continue
        _stop(pid)
        services.pid_file(name).unlink(missing_ok=True)
        say(f"{name:6} stopped (pid {pid})")


def status(services: LocalServices) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, port in (("kafka", services.kafka_port), ("redis", services.redis_port)):
        pid = _running_pid(services, name)
        out[name] = {
            "pid": pid,
            "port": port,
            "answering": _port_open(port),
            "log": str(services.log_file(name)),
        }
    return out


def stop_service(services: LocalServices, name: str) -> None:
    """Stop one service (used by failure tests); ``up`` starts it again."""
    pid = _running_pid(services, name)
    if pid is not None:
        _stop(pid)
    services.pid_file(name).unlink(missing_ok=True)


# --- Redis -----------------------------------------------------------------------------


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise ServiceError(
            "redis-server is not installed. On Debian/Ubuntu: "
            "sudo apt-get update && sudo apt-get install -y redis-server"
        )
    return found


def _start_redis(services: LocalServices, say: Say) -> None:
    if _running_pid(services, "redis") is not None:
        say(f"redis  already running (pid {_running_pid(services, 'redis')})")
        return
    _refuse_foreign_listener("redis", services.redis_port)
    data = services.state_dir / "redis"
    data.mkdir(exist_ok=True)
    command = [
        redis_server_binary(),
        *_redis_auth_config(services),
        "--bind",
        "127.0.0.1",
        "--port",
        str(services.redis_port),
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--protected-mode",
        "yes",
    ]
    _spawn("redis", command, services)
    say(f"redis  started (pid {_running_pid(services, 'redis')}, log {services.log_file('redis')})")


def _redis_auth_config(services: LocalServices) -> list[str]:
    """A config file holding ``requirepass`` (not argv: ``ps`` would show the password)."""
    if not services.redis_password:
        return []
    config = services.state_dir / "redis-auth.conf"
    config.touch(mode=0o600)
    config.write_text(f'requirepass "{_config_safe(services.redis_password)}"\n')
    return [str(config)]


def _config_safe(secret: str) -> str:
    """Refuse characters that would need escaping in redis.conf or a JAAS line."""
    if not secret or any(c in secret for c in '"\\\n\r;=\' '):
        raise ServiceError("use a password without quotes, backslashes, ';', '=' or spaces")
    return secret


# --- Kafka -----------------------------------------------------------------------------


def ensure_kafka_jars(services: LocalServices, say: Say = _print) -> Path:
    """Fetch Kafka's jars from Maven Central once; later calls are a no-op."""
    libs = services.kafka_libs
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven is needed once to fetch Apache Kafka's jars from Maven Central. "
            "On Debian/Ubuntu: sudo apt-get install -y maven openjdk-17-jre-headless"
        )
    say(f"kafka  fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"mvn failed to fetch Kafka:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)  # atomic: a half-finished download is never mistaken for a cache
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "Java 17+ is needed to run Kafka: sudo apt-get install -y openjdk-17-jre-headless"
        )
    return java


def _kafka_config(services: LocalServices) -> Path:
    kafka_dir = services.state_dir / "kafka"
    kafka_dir.mkdir(exist_ok=True)
    config = kafka_dir / "server.properties"
    protocol = services.kafka_protocol
    config.touch(mode=0o600)  # it may hold SASL passwords
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{services.controller_port}",
                f"listeners={protocol}://127.0.0.1:{services.kafka_port},"
                f"CONTROLLER://127.0.0.1:{services.controller_port}",
                f"advertised.listeners={protocol}://127.0.0.1:{services.kafka_port}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT",
                f"inter.broker.listener.name={protocol}",
                *_sasl_lines(services),
                f"log.dirs={kafka_dir / 'data'}",
                "num.partitions=4",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "group.initial.rebalance.delay.ms=0",
                "log.cleaner.backoff.ms=1000",
                "",
            ]
        )
    )
    log4j = kafka_dir / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=INFO, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.org.apache.kafka.controller=WARN\n"
    )
    return config


def _sasl_lines(services: LocalServices) -> list[str]:
    """SASL/PLAIN on the client listener, users from ``kafka_sasl_users``."""
    if not services.kafka_sasl_users:
        return []
    (broker_user, broker_password), *_ = services.kafka_sasl_users
    users = " ".join(
        f'user_{_config_safe(user)}="{_config_safe(password)}"'
        for user, password in services.kafka_sasl_users
    )
    return [
        "sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{broker_user}" password="{broker_password}" {users};',
    ]


def kraft_cluster_id() -> str:
    """A random KRaft cluster id that the storage tool reads as a value.

    The id is a uuid in url-safe base64, so one in 64 would start with "-" and
    be parsed as an unknown option; Kafka's own ``random-uuid`` skips those too.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _start_kafka(services: LocalServices, say: Say) -> None:
    if _running_pid(services, "kafka") is not None:
        say(f"kafka  already running (pid {_running_pid(services, 'kafka')})")
        return
    _refuse_foreign_listener("kafka", services.kafka_port)
    libs = ensure_kafka_jars(services, say)
    config = _kafka_config(services)
    classpath = f"{libs}/*"
    log4j = f"-Dlog4j.configuration=file:{config.with_name('log4j.properties')}"
    if not (config.parent / "data" / "meta.properties").exists():
        cid = kraft_cluster_id()
        result = subprocess.run(
            [
                _java(),
                "-cp",
                classpath,
                log4j,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cid,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=real_clock_env(),
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")
    command = [
        _java(),
        f"-Xmx{services.kafka_heap}",
        f"-Xms{services.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        log4j,
        "-cp",
        classpath,
        "kafka.Kafka",
        str(config),
    ]
    _spawn("kafka", command, services)
    say(f"kafka  started (pid {_running_pid(services, 'kafka')}, log {services.log_file('kafka')})")


def _wait_for_kafka(services: LocalServices, timeout_s: float) -> None:
    _wait_for_port("kafka", services.kafka_port, services, timeout_s)
    deadline = time.monotonic() + timeout_s
    log = services.log_file("kafka")
    while time.monotonic() < deadline:
        if "Kafka Server started" in log.read_text(errors="replace"):
            return
        _check_alive("kafka", services)
        time.sleep(0.2)
    raise ServiceError(f"kafka did not finish starting in {timeout_s:.0f}s; see {log}")


# --- processes -------------------------------------------------------------------------


#: Variables of libfaketime (the suite's any-hour check fakes the test process's clock).
_FAKE_CLOCK_VARIABLES = ("LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE", "FAKETIME_DONT_FAKE_MONOTONIC")


def real_clock_env() -> dict[str, str]:
    """The environment without a faked clock: a JVM or redis-server started under
    libfaketime hangs or misbehaves, and a broker's clock must be the machine's anyway."""
    return {k: v for k, v in os.environ.items() if k not in _FAKE_CLOCK_VARIABLES}


def _spawn(name: str, command: list[str], services: LocalServices) -> None:
    log = services.log_file(name).open("ab")
    process = subprocess.Popen(
        command,
        env=real_clock_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives the CLI's exit; stopped by `down`
    )
    services.pid_file(name).write_text(f"{process.pid}\n")


def _running_pid(services: LocalServices, name: str) -> int | None:
    try:
        pid = int(services.pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (spawned by this very process) is not alive.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def _stop(pid: int, grace_s: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _refuse_foreign_listener(name: str, port: int) -> None:
    if _port_open(port):
        raise ServiceError(
            f"port {port} on 127.0.0.1 is already used by another program, not by a {name} "
            f"started here; stop it or choose another port (NUDGESTREAM_LOCAL_{name.upper()}_PORT)"
        )


def _check_alive(name: str, services: LocalServices) -> None:
    if _running_pid(services, name) is None:
        tail = services.log_file(name).read_text(errors="replace")[-3000:]
        raise ServiceError(f"{name} exited during start-up; last log lines:\n{tail}")


def _wait_for_port(name: str, port: int, services: LocalServices, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        _check_alive(name, services)
        time.sleep(0.2)
    raise ServiceError(
        f"{name} did not open port {port} in {timeout_s:.0f}s; see {services.log_file(name)}"
    )
