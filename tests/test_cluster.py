"""Searches against a local two-node Ray cluster on loopback (a head and a worker raylet), healthy and with
the worker node killed mid-search."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_search import ROOT, SMALL, SPACE

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "raylet"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.skipif(not RAY.exists(), reason="the ray CLI is not installed next to this Python")
# The lost-worker variant passed 7 of 8 runs on the loaded 2-core machine (once the worker's trial never
# failed before the kill took effect), so it is `slow`, out of CI: bash scripts/dev test -m slow
@pytest.mark.parametrize("lose_worker", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["healthy", "worker_killed"])
def test_search_on_a_two_node_loopback_cluster(tmp_path, lose_worker):
    ray_tmp = tempfile.mkdtemp(prefix="mr", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    # `ray start --head` turns on token authentication (the token goes to ~/.ray/auth_token): the worker
    # node and the driver need RAY_AUTH_MODE=token to join.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token"}
    port = free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]

    def ray(*args):
        return subprocess.run([str(RAY), *args], env=env, capture_output=True, text=True, timeout=180)

    try:
        head = ray("start", "--head", f"--port={port}", "--include-dashboard=false", *common)
        assert head.returncode == 0, head.stderr[-2000:]
        head_raylets = raylets()
        worker = ray("start", f"--address=127.0.0.1:{port}", *common)
        assert worker.returncode == 0, worker.stderr[-2000:]
        worker_raylet = raylets() - head_raylets
        deadline = time.time() + 120
        while "/2.0 CPU" not in ray("status").stdout:  # the worker node has registered its CPU
            assert time.time() < deadline, "the worker node never joined"
            time.sleep(1)
        proc = subprocess.Popen([sys.executable, "-m", "mutate.cli", "search", str(SPACE), *SMALL,
                                 "--set", f"storage={tmp_path}", "--address", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        points = tmp_path / "digits_mlp" / "points.jsonl"
        if lose_worker:  # kill the worker node (its raylet and everything under it) mid-search
            assert len(worker_raylet) == 1
            deadline = time.time() + 300
            while time.time() < deadline:  # both trials report, so one runs on the worker node
                if points.is_file():
                    seen = [json.loads(x)["trial"] for x in points.read_text().splitlines()]
                    if len(seen) >= 4 and len(set(seen)) == 2:
                        break
                time.sleep(0.5)
            os.kill(worker_raylet.pop(), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        rows = [json.loads(x) for x in points.read_text().splitlines()]
        last: dict[str, int] = {}
        for r in rows:
            last[r["trial"]] = max(last.get(r["trial"], 0), r["step"])
        assert len(last) == 2 and set(last.values()) == {300}, last  # lost trials retried to the end
        assert "on the front" in stdout
        if lose_worker:
            log = (tmp_path / "digits_mlp" / "ray_output.log").read_text()
            assert "errored after" in log, "the worker node's trial never failed"  # Ray's own line
    finally:
        kill_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def kill_cluster(ray_tmp: str) -> None:
    """SIGKILL this test's Ray processes: those whose command line or environment (RAY_TMPDIR, inherited by
    the workers) names its temp dir. `ray stop --force` would kill every Ray process of the user on the
    machine, other searches included (it killed a concurrent study's search)."""
    for _ in range(20):
        mine = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and any(ray_tmp.encode() in (proc / f).read_bytes() for f in ("cmdline", "environ")):
                    mine.append(int(proc.name))
            except OSError:
                continue
        if not mine:
            return
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
