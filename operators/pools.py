"""The Airflow pool the worker steps run in, and the one-line setup step that creates it.

``python -m operators.pools [--slots N]`` creates (or resizes) the pool through the ``airflow`` CLI. The demo,
the tests, the compose stack's init container and the deployment guide all use this command, so the pool's name,
size and description live here alone. Airflow 3 tasks cannot read the metadata DB, so a DAG run cannot check the
pool itself: without this step the worker tasks wait in "scheduled".
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

GPU_POOL = "narration_gpu"
GPU_POOL_SLOTS = 2
GPU_POOL_DESCRIPTION = "narration worker steps running at once (one per GPU on GPU hosts)"


def airflow_command() -> list[str]:
    """The ``airflow`` beside this interpreter (a venv's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "airflow")
    return [beside] if os.path.exists(beside) else [shutil.which("airflow") or "airflow"]


def create_pools(slots: int = GPU_POOL_SLOTS, env: dict[str, str] | None = None) -> None:
    subprocess.run([*airflow_command(), "pools", "set", GPU_POOL, str(slots), GPU_POOL_DESCRIPTION],
                   check=True, capture_output=True, text=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the narration worker pool in Airflow's metadata DB.")
    parser.add_argument("--slots", type=int, default=int(os.environ.get("NARRATION_GPU_SLOTS", GPU_POOL_SLOTS)),
                        help=f"worker steps running at once (default: NARRATION_GPU_SLOTS or {GPU_POOL_SLOTS})")
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    try:
        create_pools(args.slots)
    except subprocess.CalledProcessError as exc:
        print(f"could not create pool {GPU_POOL}: {exc.stderr or exc}", file=sys.stderr)
        return 1
    print(f"pool {GPU_POOL}: {args.slots} slot(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
