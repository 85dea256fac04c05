"""launch/slurm/ray.sbatch on a real Slurm cluster: it starts Ray in the allocation, runs a
recipe with `--executor ray=ADDRESS`, and leaves no Ray process behind. Skipped where no
cluster answers (`bash launch/slurm/one_node_cluster.sh` makes one on a Debian machine)."""
import json
import os
import shutil
import subprocess
import sys

import psutil
import pytest
from _s3 import free_port
from conftest import ROOT

pytestmark = pytest.mark.slurm


def _why_not() -> str | None:
    if not shutil.which("sbatch"):
        return "no sbatch on PATH: not a Slurm machine"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20,
                                check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        states = []
    if not {"idle", "mixed"} & set(states):
        return "no Slurm cluster with a free node answers sinfo"
    run_help = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--help"], capture_output=True, text=True,
                              check=False, cwd=ROOT).stdout
    if "--executor" not in run_help:
        return "recipe run has no --executor yet (issue 10 item 2)"
    return None


def test_ray_sbatch_runs_a_recipe_through_ray_and_stops_its_ray(tmp_path):
    if reason := _why_not():
        pytest.skip(reason)
    shutil.copy(ROOT / "recipes/demo.yaml", tmp_path / "demo.yaml")
    (tmp_path / "tests/data").mkdir(parents=True)
    shutil.copy(ROOT / "tests/data/demo_problems.jsonl", tmp_path / "tests/data")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECIPE_CLI": f"{sys.executable} -m engine.cli",
           "RAY_PORT": str(free_port())}
    cpus = min(2, psutil.cpu_count())
    p = subprocess.run(["sbatch", "--wait", "--parsable", f"--cpus-per-task={cpus}", f"--output={tmp_path}/job-%j.out",
                        str(ROOT / "launch/slurm/ray.sbatch"), "demo.yaml",
                        "--cache-dir", str(tmp_path / "cache"), "--artifacts-dir", str(tmp_path / "artifacts")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    job = p.stdout.strip().split(";")[0]
    log = (tmp_path / f"job-{job}.out").read_text() if job else p.stderr
    assert p.returncode == 0, log
    assert "1 node(s)" in log
    record = json.loads(next((tmp_path / "cache/runs").glob("*.json")).read_text())
    assert {n["status"] for n in record["nodes"]} == {"ran"} and len(record["nodes"]) == 6
    rows = (tmp_path / "artifacts/demo/both/data/data.jsonl").read_text().splitlines()
    assert len(rows) == 10
    left = [q.pid for q in psutil.process_iter(["cmdline"]) if f"/ray-{job}/" in " ".join(q.info["cmdline"] or [])]
    assert left == [], f"Ray processes of job {job} still running: {left}"
