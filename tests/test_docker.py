"""The Docker files, checked without a Docker engine: compose settings, volumes, health, env names."""

import re

import pytest
import yaml
from starlette.testclient import TestClient

import app as web
from helpers import ROOT
from parallel_transcriber import ParallelTranscriber

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APPS = ["app", "app-cpu", "app-cluster"]  # the services that run the web app
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_env() -> dict[str, str]:
    return dict(re.findall(r"\b([A-Z_]+)=(\S+)", " ".join(re.findall(r"^ENV (.*?)(?=^\S)", DOCKERFILE, re.S | re.M))))


def test_gpu_services_reserve_every_nvidia_gpu():
    for service in ("app", "app-cluster", "ray-worker"):
        devices = COMPOSE["services"][service]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "${WHISPER_GPU_COUNT:-all}", "capabilities": ["gpu"]}]
    assert "deploy" not in COMPOSE["services"]["app-cpu"] and COMPOSE["services"]["app-cpu"]["profiles"] == ["cpu"]


def test_volumes_hold_the_model_cache_and_results():
    env = dockerfile_env()
    for service in COMPOSE["services"].values():
        assert set(service["volumes"]) == {f"models:{env['HF_HOME']}", f"results:{env['WHISPER_RESULTS_DIR']}"}
        assert service["shm_size"] and service["restart"] == "unless-stopped"
        # A cluster's nodes use their machine's network (Ray's many ports); the others publish one.
        assert service.get("network_mode") == "host" or service["ports"] == ["${WHISPER_PORT:-7860}:7860"]
    assert set(COMPOSE["volumes"]) == {"models", "results"}


def test_docker_stop_waits_longer_than_the_drain():
    default_drain = web.parse_settings([]).drain_seconds
    for name, service in COMPOSE["services"].items():
        grace = service["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > default_drain
        if name in APPS:
            assert service["environment"]["WHISPER_DRAIN_SECONDS"] == f"${{WHISPER_DRAIN_SECONDS:-{default_drain:.0f}}}"


def test_health_checks_point_at_a_route_that_answers(model_spec, tmp_path):
    for service in ("app", "app-cluster"):
        assert COMPOSE["services"][service]["healthcheck"]["test"] == ["CMD", "curl", "-fsS", "http://127.0.0.1:7860/health"]
    assert 'CMD ["curl", "-fsS", "http://127.0.0.1:7860/health"]' in DOCKERFILE
    settings = web.parse_settings(["--devices", "cpu", "--results-dir", str(tmp_path)])
    with ParallelTranscriber(model_spec, ["cpu"]) as pool:
        client = TestClient(web.create_app({"tiny.en": pool}, settings))
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": {"tiny.en": 1}, "workers": {"tiny.en": ["cpu"]}}


SETTING_OF = {
    "WHISPER_MODEL": ("models", "large-v3", ["large-v3"]),
    "WHISPER_DEVICES": ("devices", "cuda:0,cuda:1", "cuda:0,cuda:1"),
    "WHISPER_COMPUTE_TYPE": ("compute_type", "int8_float16", "int8_float16"),
    "WHISPER_BATCH_SIZE": ("batch_size", "24", 24),
    "WHISPER_MAX_FILE_SIZE": ("max_file_size", "500mb", "500mb"),
    "WHISPER_USERNAME": ("username", "ada", "ada"),
    "WHISPER_PASSWORD": ("password", "secret", "secret"),
    "WHISPER_KEEP_HOURS": ("keep_hours", "6", 6.0),
    "WHISPER_DRAIN_SECONDS": ("drain_seconds", "120", 120.0),
    "WHISPER_API_KEY": ("api_key", "sk-local", "sk-local"),
    "WHISPER_RAY_ADDRESS": ("ray_address", "auto", "auto"),
    "WHISPER_RESULTS_DIR": ("results_dir", "/data/results", None),
    "WHISPER_HOST": ("host", "0.0.0.0", "0.0.0.0"),
    "WHISPER_PORT": ("port", "7860", 7860),
}


@pytest.mark.parametrize("service", APPS)
def test_every_environment_name_is_read_by_the_app(service, monkeypatch):
    names = set(COMPOSE["services"][service]["environment"]) | {n for n in dockerfile_env() if n.startswith("WHISPER_")}
    assert names <= set(SETTING_OF), names - set(SETTING_OF)
    for name in names:
        monkeypatch.setenv(name, SETTING_OF[name][1])
    settings = web.parse_settings([])
    for name in names:
        field, value, expected = SETTING_OF[name]
        setting = getattr(settings, field)
        assert setting == (expected if expected is not None else setting.__class__(value)), name


def test_image_and_ci_install_the_same_pinned_requirements():
    assert "COPY requirements.txt requirements-gpu.txt ./" in DOCKERFILE and "pip install -r requirements.txt" in DOCKERFILE
    assert (ROOT / "requirements-dev.txt").read_text().splitlines()[1] == "-r requirements.txt"
    assert "-r requirements-dev.txt" in (ROOT / ".ci" / "run").read_text()
    requirements = (ROOT / "requirements.txt").read_text() + (ROOT / "requirements-gpu.txt").read_text()
    assert "-r requirements-gpu.txt" in DOCKERFILE
    for line in requirements.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line), line
    torch_pin = next(l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.startswith("torch=="))
    assert f"{torch_pin} \\" in DOCKERFILE  # the CPU build of the very same version


def test_build_context_leaves_out_tests_caches_history_and_results():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "results", "tests", "**/__pycache__", ".pytest_cache", "test-artifacts"} <= set(ignored)


def test_ci_builds_runs_and_transcribes_through_the_image():
    assert "bash .ci/image" in (ROOT / ".ci" / "run").read_text()
    image = (ROOT / ".ci" / "image").read_text()
    assert "podman build" in image and "-t \"$IMAGE\" ." in image and "tests/data/jfk.flac" in image


def test_a_cluster_is_a_ray_head_with_the_app_and_workers_that_join_it():
    head, worker = COMPOSE["services"]["app-cluster"], COMPOSE["services"]["ray-worker"]
    assert head["profiles"] == ["cluster"] and worker["profiles"] == ["ray-worker"]
    assert head["network_mode"] == worker["network_mode"] == "host"
    start_head, start_app = head["command"][2].split(" && ")
    assert start_head.startswith("ray start --head --port=6379") and start_app == "exec python app.py"
    assert head["environment"]["WHISPER_RAY_ADDRESS"] == "auto"
    assert "exec ray start --address=$${WHISPER_RAY_HEAD:?" in worker["command"][2] and "--block" in worker["command"][2]
    assert re.search(r"^ray==", (ROOT / "requirements.txt").read_text(), re.M)  # the image has the ray command
