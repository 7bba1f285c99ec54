"""The sweep on a real two-node Ray cluster: trials spread over the nodes, rows in one folder named by URI.

Both nodes run on this machine (``ray.cluster_utils.Cluster``), each with one CPU slot and
its own dataset/checkpoint cache (``WMBENCH_CACHE`` set per raylet), as nodes with local
disks would be. The sweep is driven through the CLI with ``--address``; the results
folder is a ``file://`` URI that every node writes to, as shared storage would be.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import assert_complete_and_unique, wait_for
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tasks import ray_cluster

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_sweep.yaml"
LEWM_ONLY = "models=[{name:lewm,size:tiny}]"
SWEEP_TIMEOUT = 420  # seconds; a busy 2-core machine needs ~2 minutes for a 2-trial sweep


@dataclass
class Nodes:
    """A running local Ray cluster: its address, its nodes and each node's own cache folder."""

    cluster: Cluster
    head: ray._private.node.Node
    workers: list[ray._private.node.Node]
    caches: dict[str, Path]  # node id -> that node's WMBENCH_CACHE

    @property
    def address(self) -> str:
        return self.cluster.address


@contextmanager
def local_cluster(root: Path, workers: int) -> Iterator[Nodes]:
    """A head node plus ``workers`` worker nodes, one CPU slot each; every node is torn down on exit."""
    cluster = Cluster()
    caches: dict[str, Path] = {}
    try:
        nodes = []
        for name in ["head", *(f"worker{i}" for i in range(workers))]:
            cache = root / f"cache-{name}"  # set in the raylet's environment: its workers inherit it
            nodes.append(cluster.add_node(num_cpus=1, env_vars={"WMBENCH_CACHE": str(cache)}))
            caches[nodes[-1].node_id] = cache
        cluster.wait_for_nodes()
        head, *added = nodes
        yield Nodes(cluster, head, added, caches)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """One two-node cluster shared by the tests that leave its nodes in place."""
    with local_cluster(tmp_path_factory.mktemp("cluster"), workers=1) as nodes:
        yield nodes


def sweep_command(address: str, results_uri: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "harness.run", str(TINY), f"results_dir={results_uri}", *overrides,
            "--address", address, "--no-leaderboard"]  # fmt: skip


def run_sweep(address: str, results_uri: str, *overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI against the cluster; returns the process and the sweep wall-clock it printed."""
    done = subprocess.run(sweep_command(address, results_uri, *overrides), capture_output=True, text=True,
                          cwd=REPO, timeout=SWEEP_TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done, sweep_wall_clock(done.stdout)


def sweep_wall_clock(stdout: str) -> float:
    found = re.search(r"sweep wall-clock ([\d.]+) s", stdout)
    assert found, stdout[-2000:]
    return float(found.group(1))


def shard_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every shard file of one dataset folder."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("shard_*.h5"))}


def test_sweep_spreads_trials_over_both_nodes_into_one_results_folder(two_nodes, tmp_path):
    root = tmp_path / "results"
    _, wall = run_sweep(two_nodes.address, root.as_uri())
    rows = assert_complete_and_unique(root, trials=2)  # lewm and random, one seed
    per_node = rows.drop_duplicates("trial_id")["node"].value_counts().to_dict()
    log.info("two-node sweep: %s rows per node, wall-clock %.1f s", rows["node"].value_counts().to_dict(), wall)
    # Two one-slot nodes and two concurrent trials: one trial on each node.
    assert per_node == {two_nodes.head.node_id: 1, two_nodes.workers[0].node_id: 1}
    # The driver's runtime environment reached both nodes' trial processes: they ran with its allocator setting.
    assert set(rows["malloc_tunables"]) == {ray_cluster.worker_env()["GLIBC_TUNABLES"]}
    # Each node built the trial's data in its own cache, to the same bytes.
    (key,) = rows["dataset_key"].unique()
    head_cache, worker_cache = (
        two_nodes.caches[node.node_id] / "datasets" for node in (two_nodes.head, *two_nodes.workers)
    )
    shared = {d.name for d in head_cache.iterdir()} & {d.name for d in worker_cache.iterdir()}
    assert key in shared and len(shared) >= 2  # the training set and the held-out set
    for name in shared:
        assert shard_hashes(head_cache / name) == shard_hashes(worker_cache / name) != {}


def test_collections_on_two_nodes_write_byte_identical_shards(two_nodes, tmp_path):
    """The same dataset key collected independently on each node gives the same shard files, byte for byte,
    and so does one collection spread over both nodes as Ray tasks (the sweep driver's way)."""
    ray.init(address=two_nodes.address, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def collect_here(episodes: int, steps: int) -> tuple[str, str, dict[str, str], dict]:
        from tasks.base import make_task
        from tasks.data import SHARD_EPISODES, cache_root, collect

        data = collect(make_task("two_room", image_size=32), "expert", episodes, steps, seed=7, noise=0.3,
                       workers=1, progress=False)  # fmt: skip
        folder = cache_root() / "datasets" / data.key
        hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard_*.h5"))}
        manifest = json.loads((folder / "manifest.json").read_text())
        assert len(hashes) == -(-episodes // SHARD_EPISODES)
        return ray.get_runtime_context().get_node_id(), data.key, hashes, manifest

    nodes = [two_nodes.head, *two_nodes.workers]
    pinned = [NodeAffinitySchedulingStrategy(node.node_id, soft=False) for node in nodes]
    try:
        collected = ray.get([collect_here.options(scheduling_strategy=pin).remote(60, 12) for pin in pinned])
        from tasks.base import make_task
        from tasks.data import collect

        spread = collect(make_task("two_room", image_size=32), "expert", 60, 12, seed=7, noise=0.3,
                         cache_dir=tmp_path, backend="ray", progress=False)  # fmt: skip
    finally:
        ray.shutdown()
    (head_id, head_key, head_shards, head_manifest), (worker_id, worker_key, worker_shards, worker_manifest) = collected
    assert (head_id, worker_id) == (nodes[0].node_id, nodes[1].node_id)
    assert head_key == worker_key
    assert len(head_shards) == 6 and head_shards == worker_shards  # 60 episodes: 6 shards of 10
    spread_folder = tmp_path / "datasets" / spread.key
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in spread_folder.glob("shard_*.h5")} == head_shards
    for name, digest in head_shards.items():  # the files really are on each node's own disk
        for node in nodes:
            path = two_nodes.caches[node.node_id] / "datasets" / head_key / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # The manifests differ only in the measured collection speed.
    assert head_manifest.pop("frames_per_s") > 0 and worker_manifest.pop("frames_per_s") > 0
    assert head_manifest == worker_manifest


@pytest.mark.slow
def test_sweep_survives_losing_a_worker_node_mid_trial(tmp_path):
    """The worker node dies while its trial trains; Ray retries it on the head and no row is lost or doubled."""
    root = tmp_path / "results"
    with local_cluster(tmp_path, workers=1) as nodes:
        worker = nodes.workers[0]
        worker_datasets = nodes.caches[worker.node_id] / "datasets"
        overrides = (LEWM_ONLY, "seeds=[0,1]", "train.steps=60", "max_failures=2")
        output = tmp_path / "driver.log"
        with open(output, "w") as sink:
            driver = subprocess.Popen(sweep_command(nodes.address, root.as_uri(), *overrides), cwd=REPO,
                                      stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            # The worker's trial has collected its training and held-out data: it is training now.
            wait_for(lambda: len(list(worker_datasets.glob("*/manifest.json"))) == 2, SWEEP_TIMEOUT,
                     "the worker node's trial started training", driver)  # fmt: skip
            finished_before = len(list((root / "trials").glob("*.parquet")))
            nodes.cluster.remove_node(worker)
            driver.wait(timeout=SWEEP_TIMEOUT)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        stdout = output.read_text()
        assert driver.returncode == 0, stdout[-4000:]
        rows = assert_complete_and_unique(root, trials=2)
    log.info("node loss: %s rows per node, wall-clock %.1f s", rows["node"].value_counts().to_dict(),
             sweep_wall_clock(stdout))  # fmt: skip
    assert finished_before < 2, "the worker must die before its trial wrote rows"
    # The worker's trial never wrote a row: both trials' rows come from the surviving head node.
    assert set(rows["node"]) == {nodes.head.node_id}


@pytest.mark.slow
def test_same_sweep_gives_the_same_rows_on_one_node_and_on_two(tmp_path):
    """Spreading trials over nodes changes where they run, not what they measure; logs both wall-clocks."""
    overrides = (LEWM_ONLY, "seeds=[0,1,2,3]")
    measured, walls = {}, {}
    for workers in (0, 1):
        folder = tmp_path / f"{workers + 1}-node"
        with local_cluster(folder, workers=workers) as nodes:
            _, walls[workers + 1] = run_sweep(nodes.address, (folder / "results").as_uri(), *overrides)
            rows = assert_complete_and_unique(folder / "results", trials=4)
            assert rows["node"].nunique() == workers + 1
        measured[workers + 1] = rows.set_index(["trial_id", "condition"]).sort_index()
    log.info("4 LeWM trials: 1 node %.1f s, 2 nodes %.1f s (sweep wall-clock)", walls[1], walls[2])
    metrics = ["success_rate", "final_distance", "final_loss", "latent_eff_rank", "dataset_key", "num_params"]
    pd.testing.assert_frame_equal(measured[1][metrics], measured[2][metrics])


if __name__ == "__main__":  # pragma: no cover - a convenience for measuring by hand
    sys.exit(pytest.main([__file__, "-m", "", "-s", "--log-cli-level=INFO", *sys.argv[1:]]))
