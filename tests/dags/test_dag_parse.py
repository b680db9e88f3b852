"""The DAG file is cheap to parse: the dag-processor and every task start parse it under a 30 s timeout, so it
touches no Variable, Connection or metadata DB and imports none of the core library's heavy dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "numpy", "scipy", "boto3", "botocore", "torch", "pysubs2", "docker", "requests",
         "narration.storage", "narration.deliver", "narration.pipeline", "airflow.providers.amazon")

PARSE = """
import importlib.util, json, sys
import airflow.sdk
from airflow.sdk import BaseHook, Connection, Variable

def refuse(*args, **kwargs):
    raise RuntimeError("metadata access while parsing the DAG file")

Variable.get = Variable.set = staticmethod(refuse)
BaseHook.get_connection = Connection.get = staticmethod(refuse)
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("narration_batch_parse", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dags = [name for name in vars(module) if name == "narration_batch"]
print(json.dumps({"dags": dags, "new": sorted(set(sys.modules) - before)}))
"""


def test_parsing_the_dag_file_reads_no_metadata_and_imports_nothing_heavy(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/absent/never.db",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "include")])})
    proc = subprocess.run([sys.executable, "-c", PARSE, str(REPO / "dags" / "narration_batch.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["dags"] == ["narration_batch"]
    imported_heavy = sorted(m for m in parsed["new"] if m.split(".")[0] in HEAVY or m in HEAVY
                            or any(m.startswith(h + ".") for h in HEAVY))
    assert imported_heavy == [], imported_heavy
