"""A search against a local two-node Ray cluster on loopback (a head and a worker raylet)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_search import ROOT, SMALL, SPACE

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not RAY.exists(), reason="the ray CLI is not installed next to this Python")
def test_search_on_a_two_node_loopback_cluster(tmp_path):
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
        worker = ray("start", f"--address=127.0.0.1:{port}", *common)
        assert worker.returncode == 0, worker.stderr[-2000:]
        res = subprocess.run([sys.executable, "-m", "mutate.cli", "search", str(SPACE), *SMALL,
                              "--set", f"storage={tmp_path}", "--address", f"127.0.0.1:{port}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        rows = [json.loads(x) for x in (tmp_path / "digits_mlp" / "points.jsonl").read_text().splitlines()]
        assert {r["step"] for r in rows} == {50, 100, 150, 200, 250, 300}
        assert "on the front" in res.stdout
    finally:
        ray("stop", "--force")
        shutil.rmtree(ray_tmp, ignore_errors=True)
