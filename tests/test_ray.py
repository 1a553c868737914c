"""Workers as Ray actors on a real two-node cluster, started here on 127.0.0.1 (each node one CPU)."""

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from conftest import tiled
from helpers import ROOT, free_port, get_json, run_cli, start_app, wait_until, word_error_rate
from pipeline import transcribe_file
from startup import start_pool

pytestmark = pytest.mark.server  # starts the app (or a Ray cluster) as its own processes

NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]


@dataclass
class Cluster:
    address: str
    nodes: list[subprocess.Popen]  # the nodes beyond the head, each a `ray start --block`

    def add_node(self) -> subprocess.Popen:
        self.nodes.append(
            subprocess.Popen(
                [ray_command(), "start", f"--address={self.address}", *NODE, "--block"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return self.nodes[-1]

    def alive_nodes(self) -> int:
        status = subprocess.run(
            [ray_command(), "status", f"--address={self.address}"], capture_output=True, text=True, timeout=60
        ).stdout
        return status.split("Active:")[1].split("Pending:")[0].count("node_") if "Active:" in status else 0

    def wait_for_nodes(self, count: int) -> None:
        wait_until(lambda: self.alive_nodes() == count, f"the cluster did not reach {count} nodes", every=1)


def ray_command() -> str:
    path = shutil.which("ray")
    assert path, "the ray command comes with the ray package (requirements.txt)"
    return path


def ray_processes() -> list[str]:
    found = subprocess.run(
        ["pgrep", "-a", "-f", "raylet|gcs_server|ray::|ray/dashboard|default_worker.py"], capture_output=True, text=True
    ).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def cluster():
    assert not ray_processes(), "Ray is already running on this machine; the test needs it to itself"
    port = free_port()
    subprocess.run(
        [ray_command(), "start", "--head", f"--port={port}", "--include-dashboard=false", *NODE],
        check=True,
        capture_output=True,
        timeout=120,
    )
    cluster = Cluster(f"127.0.0.1:{port}", [])
    try:
        cluster.add_node()
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        for node in cluster.nodes:
            node.terminate()
        for node in cluster.nodes:
            node.wait(timeout=60)
        subprocess.run([ray_command(), "stop", "--force"], capture_output=True, timeout=120)
        # Every Ray process this module started is gone.
        wait_until(lambda: not ray_processes(), ray_processes, every=0.5)


@pytest.fixture(scope="module")
def three_minutes(composition, tmp_path_factory) -> Path:
    return tiled(composition[0], 2, tmp_path_factory.mktemp("ray") / "three-minutes.wav")


def test_without_a_cluster_ray_is_not_imported():
    check = "import sys, app, cli; app.start_pools; assert 'ray' not in sys.modules, 'ray imported'"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True).returncode == 0


def test_a_cluster_that_does_not_answer_is_one_line_and_exit_2(jfk):
    result = run_cli(jfk[0], "--ray-address", f"127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 2 and "no Ray cluster answers at 127.0.0.1:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_cli_on_the_cluster_gives_the_local_pools_subtitles(cluster, three_minutes, tmp_path):
    local = run_cli(three_minutes, "-o", tmp_path / "local.srt", "--devices", "cpu*2")
    assert local.returncode == 0, local.stderr
    on_ray = run_cli(
        three_minutes, "-o", tmp_path / "ray.srt", "--devices", "cpu*2", "--ray-address", cluster.address, "--verbose"
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert (tmp_path / "ray.srt").read_bytes() == (tmp_path / "local.srt").read_bytes()
    loads = [line for line in on_ray.stderr.splitlines() if "model loaded" in line]
    assert len(loads) == 2, on_ray.stderr  # one per actor, and none per job or unit
    assert any("[node-1 cpu]" in line for line in loads) and any("[node-2 cpu]" in line for line in loads)
    units = [
        line for line in on_ray.stderr.splitlines() if re.search(r"\[node-[12] cpu\] unit \d+ \(\d+\.\d s\)", line)
    ]
    assert {line.split("[")[1].split("]")[0] for line in units} == {"node-1 cpu", "node-2 cpu"}  # both worked


def test_the_app_serves_a_job_lists_its_actors_and_gives_a_joining_node_one(cluster, jfk, tmp_path):
    server = start_app(tmp_path, WHISPER_RAY_ADDRESS=cluster.address)
    try:
        assert sorted(get_json(server.url + "/health")["workers"]["tiny.en"]) == ["node-1 cpu", "node-2 cpu"]
        client = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
        _summary, text, *_ = client.predict(upload=handle_file(str(jfk[0])), formats=["srt"], api_name="/transcribe")
        assert word_error_rate(jfk[1], text) <= 0.10

        joined = cluster.add_node()  # a third machine: the server gives it an actor, without a restart
        wait_until(lambda: len(get_json(server.url + "/health")["workers"]["tiny.en"]) == 3, server.output, every=1)
        assert get_json(server.url + "/health")["models"] == {"tiny.en": 3}
        _summary, text, *_ = client.predict(upload=handle_file(str(jfk[0])), formats=["srt"], api_name="/transcribe")
        assert word_error_rate(jfk[1], text) <= 0.10
    finally:
        stopped = server.stop()
    assert stopped == 143
    joined.terminate()
    joined.wait(timeout=60)
    cluster.nodes.remove(joined)
    cluster.wait_for_nodes(2)


def cues(transcript) -> list[str]:
    return [f"{cue.start:.3f} {cue.end:.3f} {cue.text}" for cue in transcript.cues]


def disrupted_run(pool, path: Path, disrupt) -> list[str]:
    """Transcribe `path`, calling `disrupt(busy workers)` once, while the job has batches in flight on those
    workers and more than a tenth of it is still to do."""
    disrupted = []

    def on_progress(progress) -> None:
        if not disrupted and progress.busy and progress.fraction < 0.9:
            disrupted.append(progress.busy)
            disrupt(list(progress.busy))

    transcript = transcribe_file(path, pool, on_progress=on_progress)
    assert disrupted, "the job ended before it could be disrupted: make the recording longer"
    return cues(transcript)


def test_an_actor_killed_mid_job_is_restarted_and_the_job_gives_the_same_subtitles(cluster, three_minutes, model_spec):
    with start_pool(model_spec, "cpu*2", cluster.address) as pool:
        undisturbed = cues(transcribe_file(three_minutes, pool))
        killed = []

        def kill_a_busy_actor(busy_devices: list[str]) -> None:
            killed.append(dict(zip(pool.devices, pool.worker_pids()))[busy_devices[0]])
            os.kill(killed[0], signal.SIGKILL)

        assert disrupted_run(pool, three_minutes, kill_a_busy_actor) == undisturbed
        victim = killed[0]
        # Ray starts the actor again, which loads its model again: while Ray does, the actor is only
        # "unavailable", and the pool asks again until it answers (it once took that for gone).
        wait_until(
            lambda: pool.model_loads == 3, lambda: f"the restarted actor's model load ({pool.model_loads} loads)"
        )
        assert victim not in pool.worker_pids() and len(pool.worker_pids()) == 2
        assert cues(transcribe_file(three_minutes, pool)) == undisturbed  # both actors serve again


def test_a_node_that_leaves_mid_job_leaves_the_job_to_the_others(cluster, three_minutes, model_spec):
    with start_pool(model_spec, "cpu*2", cluster.address) as pool:
        assert sorted(pool.devices) == ["node-1 cpu", "node-2 cpu"]
        undisturbed = cues(transcribe_file(three_minutes, pool))
        second = cluster.nodes[0]
        assert disrupted_run(pool, three_minutes, lambda _busy: second.terminate()) == undisturbed
        second.wait(timeout=60)
        cluster.nodes.remove(second)
        # The head's actor alone serves the next job; the other actor waits for room in the cluster.
        assert cues(transcribe_file(three_minutes, pool)) == undisturbed
