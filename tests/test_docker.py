"""The Docker files, checked without a Docker engine: compose settings, volumes, health, env names."""

import re

import pytest
import yaml
from starlette.testclient import TestClient

import app as web
from helpers import ROOT
from parallel_transcriber import ParallelTranscriber
from settings import APP, SETTINGS

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


def test_volumes_hold_the_model_cache_and_results_and_the_apps_a_media_library():
    env = dockerfile_env()
    kept = {f"models:{env['HF_HOME']}", f"results:{env['WHISPER_RESULTS_DIR']}"}
    for service in COMPOSE["services"].values():
        library = {"${WHISPER_MEDIA:-media}:/media"} if "ports" in service else set()  # the apps, not the cluster
        assert set(service["volumes"]) == kept | library
        assert service["shm_size"] and service["restart"] == "unless-stopped"
        # A cluster's nodes use their machine's network (Ray's many ports); the others publish one.
        assert service.get("network_mode") == "host" or service["ports"] == ["${WHISPER_PORT:-7860}:7860"]
    assert set(COMPOSE["volumes"]) == {"models", "results", "media"}


def test_docker_stop_waits_longer_than_the_drain():
    default_drain = web.parse_settings([]).drain_seconds
    for name, service in COMPOSE["services"].items():
        grace = service["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > default_drain
        if name in APPS:
            assert service["environment"]["WHISPER_DRAIN_SECONDS"] == f"${{WHISPER_DRAIN_SECONDS:-{default_drain:.0f}}}"


def test_health_checks_point_at_a_route_that_answers(model_spec, tmp_path):
    for service in ("app", "app-cluster"):
        assert COMPOSE["services"][service]["healthcheck"]["test"] == [
            "CMD",
            "curl",
            "-fsS",
            "http://127.0.0.1:7860/health",
        ]
    assert 'CMD ["curl", "-fsS", "http://127.0.0.1:7860/health"]' in DOCKERFILE
    settings = web.parse_settings(["--devices", "cpu", "--results-dir", str(tmp_path)])
    with ParallelTranscriber(model_spec, ["cpu"]) as pool:
        client = TestClient(web.create_app({"tiny.en": pool}, settings))
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": {"tiny.en": 1}, "workers": {"tiny.en": ["cpu"]}}


# A value for each variable that compose and the Dockerfile set, other than its default.
SAMPLES = {
    "WHISPER_MODEL": "large-v3",
    "WHISPER_DEVICES": "cuda:0,cuda:1",
    "WHISPER_COMPUTE_TYPE": "int8_float16",
    "WHISPER_BATCH_SIZE": "24",
    "WHISPER_MAX_FILE_SIZE": "500mb",
    "WHISPER_USERNAME": "ada",
    "WHISPER_PASSWORD": "secret",
    "WHISPER_KEEP_HOURS": "6",
    "WHISPER_DRAIN_SECONDS": "120",
    "WHISPER_API_KEY": "sk-local",
    "WHISPER_RAY_ADDRESS": "auto",
    "WHISPER_RESULTS_DIR": "/data/results",
    "WHISPER_HOST": "0.0.0.0",
    "WHISPER_PORT": "7861",
    "WHISPER_WATCH": "/media",
    "WHISPER_WATCH_FORMATS": "srt,vtt",
    "WHISPER_TRUSTED_PROXIES": "172.18.0.0/16",
}


@pytest.mark.parametrize("service", APPS)
def test_every_environment_name_is_read_by_the_app(service, monkeypatch):
    names = set(COMPOSE["services"][service]["environment"]) | {n for n in dockerfile_env() if n.startswith("WHISPER_")}
    settings = {setting.env: setting for setting in SETTINGS if APP in setting.doors}
    assert names <= set(settings), names - set(settings)
    for name in names:
        monkeypatch.setenv(name, SAMPLES[name])
    config = web.parse_settings([])
    for name in names:
        setting = settings[name]
        assert getattr(config, setting.name) == setting.parse(SAMPLES[name]) != setting.parse(setting.default), name


def test_image_and_ci_install_the_same_pinned_requirements():
    assert (
        "COPY requirements.txt requirements-gpu.txt ./" in DOCKERFILE
        and "pip install -r requirements.txt" in DOCKERFILE
    )
    assert (ROOT / "requirements-dev.txt").read_text().splitlines()[1] == "-r requirements.txt"
    assert "-r requirements-dev.txt" in (ROOT / ".ci" / "run").read_text()
    requirements = (ROOT / "requirements.txt").read_text() + (ROOT / "requirements-gpu.txt").read_text()
    assert "-r requirements-gpu.txt" in DOCKERFILE
    for line in requirements.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.]*", line), line
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    torch_pin = next(line for line in requirements if line.startswith("torch=="))
    assert f"{torch_pin} \\" in DOCKERFILE  # the CPU build of the very same version


def test_build_context_leaves_out_tests_caches_history_and_results():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "results", "tests", "**/__pycache__", ".pytest_cache", "test-artifacts"} <= set(ignored)


def test_ci_builds_runs_and_transcribes_through_the_image():
    assert "bash .ci/image" in (ROOT / ".ci" / "run").read_text()
    image = (ROOT / ".ci" / "image").read_text()
    assert "podman build" in image and '-t "$IMAGE" .' in image and "tests/data/jfk.flac" in image


def test_a_cluster_is_a_ray_head_with_the_app_and_workers_that_join_it():
    head, worker = COMPOSE["services"]["app-cluster"], COMPOSE["services"]["ray-worker"]
    assert head["profiles"] == ["cluster"] and worker["profiles"] == ["ray-worker"]
    assert head["network_mode"] == worker["network_mode"] == "host"
    start_head, start_app = head["command"][2].split(" && ")
    assert start_head.startswith("ray start --head --port=6379") and start_app == "exec python app.py"
    assert head["environment"]["WHISPER_RAY_ADDRESS"] == "auto"
    assert (
        "exec ray start --address=$${WHISPER_RAY_HEAD:?" in worker["command"][2] and "--block" in worker["command"][2]
    )
    assert re.search(r"^ray==", (ROOT / "requirements.txt").read_text(), re.M)  # the image has the ray command
