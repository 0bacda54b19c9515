"""The API stays free of torch, and the compose file describes the stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_api_does_not_import_torch():
    code = (
        "import sys, app.main, app.routes.audits; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_worker_main_process_does_not_import_torch():
    # The prefork pool forks from this process: CUDA must start only in the children.
    code = "import sys, worker.tasks, worker.celery_app; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"redis", "api", "worker"}
    redis_command = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis_command
    assert services["api"]["build"]["target"] == "api"
    assert services["worker"]["build"]["target"] == "worker"
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert environment["FRAGILITY_REDIS_URL"].startswith("redis://redis:6379")
        assert environment["FRAGILITY_STORAGE_DIR"] == "/data/storage"
        mounts = [str(volume) for volume in services[name]["volumes"]]
        assert any(mount.endswith(":/data/storage") for mount in mounts), mounts
    assert "redis-data" in compose["volumes"]


def stage_instructions(text: str, target: str) -> list[str]:
    """Return the instructions (comments dropped, continuations joined) of one build stage."""
    joined = text.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    start = next(i for i, line in enumerate(instructions) if line.endswith(f"AS {target}"))
    stage = [instructions[start]]
    for line in instructions[start + 1 :]:
        if line.startswith("FROM "):
            break
        stage.append(line)
    return stage


def test_dockerfile_targets():
    text = (ROOT / "Dockerfile").read_text()
    api = " ".join(stage_instructions(text, "api"))
    assert 'pip install ".[service]"' in api
    assert "torch" not in api
    worker = " ".join(stage_instructions(text, "worker"))
    assert "pip install torch==2.14.1 torchvision==0.29.1" in worker
    assert '".[engine,service]"' in worker
