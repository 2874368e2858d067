"""The embedded Ray a search starts listens on loopback only, with the dashboard off."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_search import ROOT, SPACE

# Runs in a fresh interpreter (Ray is process-global): start Ray exactly as `mutate search` does, start one
# worker, then list every LISTEN socket of this process and its descendants (GCS, raylet, agents, workers).
PROBE = r"""
import json, os, sys
from mutate.search import space as spaces
from mutate.search.runner import _init_ray
import ray
try:
    import psutil  # Ray ships its own copy in ray/thirdparty_files
except ImportError:
    print(json.dumps({"skip": "psutil is not available"}))
    sys.exit(0)
space = spaces.load(sys.argv[1])
_init_ray(space, None, verbose=False)
@ray.remote(num_cpus=0)
def worker_pid():
    return os.getpid()
ray.get(worker_pid.remote())
node = ray._private.worker._global_node
me = psutil.Process()
listening, names = [], []
for p in [me, *me.children(recursive=True)]:
    try:
        conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections(kind="inet")
        name, cmdline = p.name(), " ".join(p.cmdline())
    except psutil.Error:
        continue
    names.append(cmdline)
    listening += [[name, c.laddr.ip, c.laddr.port, cmdline[:300]] for c in conns if c.status == psutil.CONN_LISTEN]
from ray._private import ray_constants
print(json.dumps({"node_ip": node.node_ip_address, "gcs": node.gcs_address, "listening": listening,
                  "webui": node.address_info.get("webui_url"), "processes": names,
                  "flag_restored": ray_constants.ENABLE_RAY_CLUSTER,
                  "env_restored": "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ}))
ray.shutdown()
"""


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def test_embedded_ray_listens_on_loopback_only_and_has_no_dashboard():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    res = subprocess.run([sys.executable, "-c", PROBE, str(SPACE)], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if "skip" in info:
        pytest.skip(info["skip"])
    assert info["node_ip"] == "127.0.0.1" and info["gcs"].startswith("127.0.0.1:"), info
    servers = {name for name, *_ in info["listening"]}
    assert {"gcs_server", "raylet"} <= servers, info["listening"]  # the probe saw Ray's servers at all
    exposed = [s for s in info["listening"] if not loopback(s[1])]
    assert not exposed, f"listening on a non-loopback address: {exposed}"
    # Dashboard off: no web UI address, nothing of the dashboard listens (Ray 2.60 still runs its head
    # process with --minimal --disable-frontend, and the per-node agent with --minimal, both without a port)
    assert not info["webui"], info["webui"]
    assert not [s for s in info["listening"] if "dashboard" in s[3] or s[2] == 8265], info["listening"]
    heads = [p for p in info["processes"] if "dashboard/dashboard.py" in p]
    assert all("--minimal" in p and "--disable-frontend" in p for p in heads), heads
    assert info["flag_restored"] and info["env_restored"], "Ray's single-node switch leaked out of ray.init"


def test_a_run_path_with_glob_characters_is_restored_through_a_plain_link(tmp_path):
    """Ray Tune finds a run's saved state with `glob.glob(os.path.join(folder, "experiment_state-*.json"))`,
    unescaped: a bug hunt's Ctrl-C'd search in `br [1]/run [a]` resumed with no trial state and failed every
    trial. The restore goes through a link of a plain name beside the nearest plain parent, removed after."""
    import glob

    from mutate.errors import BadInput
    from mutate.search import runner

    run_dir = tmp_path / "br [1]" / "run [a]*?"
    run_dir.mkdir(parents=True)
    (run_dir / "experiment_state-2026.json").write_text("{}")
    assert glob.glob(os.path.join(str(run_dir), "experiment_state-*.json")) == []  # what Tune met
    with runner._glob_safe(run_dir) as link:
        assert link.parent == tmp_path and link.name.startswith(".mutate-resume-run _a___-")
        first = link
        assert link.resolve() == run_dir.resolve()
        assert [Path(f).name for f in glob.glob(os.path.join(str(link), "experiment_state-*.json"))] == [
            "experiment_state-2026.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["br [1]"]
    # the same link at every resume (a review: Tune saved checkpoint paths under the first session's link, and
    # a PBT clone's path was not rewritten at the next resume, whose link had another name)
    first.symlink_to(run_dir)  # as a session killed outright leaves it
    with runner._glob_safe(run_dir) as again:
        assert again == first and again.resolve() == run_dir.resolve()
    assert not first.is_symlink()
    plain = tmp_path / "plain"
    with runner._glob_safe(plain) as same:
        assert same == plain
    blocker = tmp_path / "a_file"  # no link can be made where one is needed: one line saying what to do
    blocker.write_text("")
    with pytest.raises(BadInput, match=r"holds \[, \], \* or \?, and no link to it could be made in .*a_file "
                                       r"\(Not a directory\): rename its folders"):
        with runner._glob_safe(blocker / "x [1]" / "run"):
            pass
