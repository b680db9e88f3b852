"""Throwaway Postgres and Redis servers on loopback for the distributed stage and the orchestration benchmark.

Each runs from Debian's packages (installed by scripts/system-packages.sh when missing) on a free port with its data
in a fresh temporary directory, as a child process that ``stop()`` ends and whose data it removes.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from narration.dev.local_s3 import free_port

REPO = Path(__file__).resolve().parents[1]


def install_system_packages() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "system-packages.sh")], check=True)


def postgres_bin_dir() -> Path:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/VERSION/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        install_system_packages()
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("postgres: no /usr/lib/postgresql/*/bin/initdb; install Debian's postgresql package")
    return Path(found[-1]).parent


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        install_system_packages()
        found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis: no redis-server on PATH; install Debian's redis-server package")
    return found


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s; see {log}")


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PostgresCluster:
    """A fresh cluster made by ``initdb``; one database ``airflow`` owned by the superuser ``airflow`` (trust auth).

    Postgres refuses to run as root, so as root the cluster belongs to Debian's ``postgres`` system user.
    """

    USER = DATABASE = "airflow"

    def __init__(self, log_dir: Path):
        self.log = log_dir / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.data_dir: Path | None = None
        self.run_as = "postgres" if os.geteuid() == 0 else None

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{self.USER}@127.0.0.1:{self.port}/{self.DATABASE}"

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=120, user=self.run_as)

    def start(self) -> PostgresCluster:
        bin_dir = postgres_bin_dir()
        # Not under pytest's tmp_path: its parents are private to root, and the server runs as another user.
        self.data_dir = Path(tempfile.mkdtemp(prefix="narration-postgres-"))
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._run(str(bin_dir / "initdb"), "-D", str(self.data_dir / "data"), "-U", self.USER, "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir / "data"), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
                 "-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],  # a throwaway cluster: durability costs time and buys nothing
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, user=self.run_as)
        wait_for_port(self.port, self.process, "postgres", self.log)
        self._wait_ready(bin_dir)
        self._run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, self.DATABASE)
        return self

    def _wait_ready(self, bin_dir: Path, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"postgres on port {self.port} not ready within {timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)  # SIGINT: "fast" shutdown, sessions are ended
        self.process = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisServer:
    """redis-server with no persistence, on a free loopback port."""

    def __init__(self, log_dir: Path):
        self.log = log_dir / "redis.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_server_binary()
        self.data_dir = Path(tempfile.mkdtemp(prefix="narration-redis-"))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.data_dir), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process, "redis-server", self.log)
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
