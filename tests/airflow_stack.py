"""Real Airflow components as child processes: api-server, scheduler and dag-processor, and Celery workers.

One harness for the three shapes the tests and the orchestration benchmark run:
SQLite + LocalExecutor (one task at a time), Postgres + LocalExecutor (parallel), and Postgres + Redis +
CeleryExecutor with N worker processes. Postgres and Redis are throwaway servers (tests/services.py); everything
listens on loopback on free ports, and ``stop()`` ends every process the stack started, task processes included.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import psutil
import requests

from narration.dev.local_s3 import free_port
from tests.services import PostgresCluster, RedisServer

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "narration_batch"
WORKER_NAME_ENV = "NARRATION_WORKER_NAME"


def artifacts_dir(stage: str) -> Path:
    """Where a stage keeps its screenshots and component logs: $NARRATION_ARTIFACTS (default ./artifacts)/stage."""
    path = Path(os.environ.get("NARRATION_ARTIFACTS") or REPO / "artifacts") / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def voiced_bucket(prefix: str, narrator_wav: bytes, manifests: dict[str, bytes]) -> str:
    """A fresh bucket with the narrator voice and ``manifests`` (key -> bytes) under incoming/."""
    from narration.settings import Settings
    from narration.storage import Storage
    from narration.voices import upload_voice

    bucket = f"{prefix}-{secrets.token_hex(4)}"
    s3 = Storage.from_settings(Settings(bucket=bucket))
    s3.ensure_bucket()
    upload_voice(s3, "narrator", narrator_wav, "This is the narrator's reference voice for the tests.")
    for key, body in manifests.items():
        s3.put_bytes(key, body)
    return bucket


def worker_hostname() -> str:
    """``[core] hostname_callable`` for workers that share one machine: the task instance records this name.

    Airflow records ``get_hostname()`` of the process that runs the task; two Celery workers on one machine would
    both record the machine's name.
    """
    import socket

    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


class AirflowStack:
    """The components on one metadata DB; ``database`` is "sqlite" or "postgres", ``executor`` "local" or "celery".

    ``parallelism`` bounds the tasks running at once (``[core] parallelism``; the LocalExecutor's process count).
    A Celery stack starts ``celery_workers`` worker processes, each running one task at a time and recording its own
    name (worker-1, worker-2, ...) as the task instance's hostname; ``worker_env`` adds variables for one worker.
    """

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, s3_env: dict[str, str], log_dir: Path, *, database: str = "sqlite",
                 executor: str = "local", celery_workers: int = 0, parallelism: int | None = None,
                 extra_env: dict[str, str] | None = None, worker_env: dict[str, dict[str, str]] | None = None):
        if database not in ("sqlite", "postgres"):
            raise ValueError(f"database must be 'sqlite' or 'postgres', not {database!r}")
        if executor not in ("local", "celery"):
            raise ValueError(f"executor must be 'local' or 'celery', not {executor!r}")
        if executor == "celery" and (database != "postgres" or celery_workers < 1):
            raise ValueError("a Celery stack needs database='postgres' and at least one worker")
        self.home = home
        self.log_dir = log_dir
        self.database = database
        self.executor = executor
        self.worker_names = [f"worker-{n + 1}" for n in range(celery_workers)]
        self.worker_env = worker_env or {}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.postgres = PostgresCluster(log_dir) if database == "postgres" else None
        self.redis = RedisServer(log_dir) if executor == "celery" else None
        self.started_s = 0.0
        self._token: str | None = None
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **inherited, **s3_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if executor == "celery" else "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only the REST-triggered run: the nightly schedule's latest run would claim the manifest first.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            # Tasks report to the api-server's execution API; without this they dial :8080 and fail.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # not 8793: another Airflow may hold it
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(log_dir / "tasks"),  # task logs kept with the artifacts
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "NARRATION_RUNNER": "local",
        }
        if parallelism is not None:
            self.env["AIRFLOW__CORE__PARALLELISM"] = str(parallelism)
        self.env.update(extra_env or {})

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> AirflowStack:
        """Start everything; on any failure, stop what already started before raising."""
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - started
        return self

    def _start(self) -> None:
        if self.postgres is not None:
            self.postgres.start()
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.postgres.sqlalchemy_url
        else:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.home}/airflow.db"
        if self.redis is not None:
            self.redis.start()
            self.env.update({
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.postgres.sqlalchemy_url}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            })
        self.cli("db", "migrate")
        self.create_pools()
        for name in self.COMPONENTS:
            self._spawn(name, [self.airflow, name], self.env)
        for name in self.worker_names:
            self.start_worker(name)
        self.wait_until(lambda: requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).ok, 180,
                        "the api-server to answer")

    def create_pools(self) -> None:
        """The documented setup step (``python -m operators.pools``), as a new install runs it."""
        done = subprocess.run([sys.executable, "-m", "operators.pools"], env=self.env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"python -m operators.pools exited with {done.returncode}:\n{done.stderr[-3000:]}")

    def start_worker(self, name: str) -> None:
        env = {**self.env, **self.worker_env.get(name, {}), WORKER_NAME_ENV: name,
               "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}
        # Its own pid file and no log server: two workers share this AIRFLOW_HOME and port range.
        self._spawn(name, [self.airflow, "celery", "worker", "--concurrency", "1", "--celery-hostname",
                           f"{name}@%h", "--pid", str(self.home / f"{name}.pid"), "--skip-serve-logs"], env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy of the handle
            self.processes[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True)

    def cli(self, *args: str) -> str:
        done = subprocess.run([self.airflow, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a worker and every process under it at once, as a lost machine would; returns the killed pids.

        The tree is frozen first (SIGSTOP) so that no process can start a child between listing and killing.
        """
        process = self.processes.pop(name)
        frozen: dict[int, psutil.Process] = {}
        while True:
            fresh = [member for member in _process_tree(process.pid) if member.pid not in frozen]
            if not fresh:
                break
            for member in fresh:
                _signal(member, signal.SIGSTOP)
                frozen[member.pid] = member
        for member in frozen.values():
            _signal(member, signal.SIGKILL)
        process.wait()
        return sorted(frozen)

    def stop(self) -> None:
        """End every component and worker (SIGTERM, then SIGKILL after 30 s) and every process they started."""
        trees = {name: _process_tree(process.pid) for name, process in self.processes.items()}
        for process in self.processes.values():  # each component leads its own process group
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for tree in trees.values():  # task processes lead process groups of their own: end any left behind
            for member in tree:
                _signal(member, signal.SIGKILL)
        self.processes.clear()
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- waiting and REST -----------------------------------------------------------------------------------

    def wait_until(self, check, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {process.returncode} while waiting for {what}; "
                                       f"see {self.log_dir / (name + '.log')}")
            try:
                result = check()
                if result:
                    return result
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}; logs in {self.log_dir}")

    def wait_for_workers(self, timeout_s: float = 180) -> None:
        """Wait until every Celery worker consumes from the broker (its log says "<name>@<host> ready.")."""
        def ready() -> bool:
            return all(f"{name}@" in text and " ready." in text for name, text in
                       ((name, (self.log_dir / f"{name}.log").read_text(errors="replace"))
                        for name in self.worker_names))

        self.wait_until(ready, timeout_s, f"Celery workers {', '.join(self.worker_names)} to be ready")

    def password(self) -> str:
        """The admin password the simple auth manager generated at start."""
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        return self.wait_until(lambda: generated.exists() and json.loads(generated.read_text()).get("admin"), 60,
                               "the generated password file")

    def token(self) -> str:
        if self._token is None:
            login = requests.post(f"{self.base_url}/auth/token", timeout=30,
                                  json={"username": "admin", "password": self.password()})
            if login.status_code != 201:
                raise RuntimeError(f"POST /auth/token answered {login.status_code}: {login.text[:300]}")
            self._token = login.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, f"{self.base_url}/api/v2{path}", timeout=30,
                                    headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        if not response.ok:
            raise RuntimeError(f"{method} /api/v2{path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout_s: float = 180) -> dict:
        """Wait for the dag-processor to parse the DAG; any import error fails at once."""
        def parsed():
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise RuntimeError(f"the DAG folder has import errors: {errors}")
            response = requests.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=10,
                                    headers={"Authorization": f"Bearer {self.token()}"})
            return response.ok and response.json()

        return self.wait_until(parsed, timeout_s, f"the dag-processor to parse {dag_id}")

    def trigger(self, conf: dict, dag_id: str = DAG_ID) -> dict:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})

    def dag_run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        return self.dag_run(run_id, dag_id)["state"]

    def wait_for_run(self, run_id: str, timeout_s: float, dag_id: str = DAG_ID) -> str:
        def finished():
            state = self.run_state(run_id, dag_id)
            return state if state in ("success", "failed") else None

        return self.wait_until(finished, timeout_s, f"run {run_id} to finish")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances",
                        params={"limit": 1000})["task_instances"]

    def tries(self, run_id: str, task_id: str, map_index: int, dag_id: str = DAG_ID) -> list[dict]:
        """Every try of one task instance (earlier tries and the latest), oldest first."""
        path = (f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/{map_index}"
                "/tries")
        return sorted(self.api("GET", path)["task_instances"], key=lambda t: t["try_number"])


def _process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, whatever process group or session they lead."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
