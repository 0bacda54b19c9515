"""The API stays free of torch, its extra covers its imports, and the compose file describes the
stack."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"app", "worker", "models", "fragility"}


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


def module_path(name: str) -> Path | None:
    """Return the source file of a first-party module or package, or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Return every module an ``import`` in the file names, in functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # "from worker.store import files" names a module too.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def api_third_party_imports() -> set[str]:
    """Return the top-level third-party modules that the API's code can import.

    Follows first-party imports statically from every module under app/, lazy imports inside
    functions included (the image decoders import pydicom and tifffile on first use). Modules
    that are only named as strings, such as the runners in worker.jobs, are not followed.
    """
    pending = [p for p in (ROOT / "app").rglob("*.py")]
    seen: set[Path] = set()
    third_party: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            top = name.split(".")[0]
            if top not in FIRST_PARTY:
                if top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
                continue
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                found = module_path(".".join(parts[:end]))
                if found is not None:
                    pending.append(found)
    return third_party


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Return the distributions that pip installs for ``requirements``, by their metadata."""
    pending = [(requirement, "") for requirement in requirements]
    found: set[str] = set()
    while pending:
        requirement, parent_extra = pending.pop()
        marker_env = {"extra": parent_extra}
        if requirement.marker is not None and not requirement.marker.evaluate(marker_env):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        key = f"{name}[{','.join(extras)}]"
        if key in found:
            continue
        found.add(key)
        found.add(name)
        for text in metadata.requires(name) or []:
            child = Requirement(text)
            for extra in ["", *extras]:
                pending.append((child, extra))
    return {entry for entry in found if "[" not in entry}


def test_service_extra_covers_api_imports():
    # The API image installs the base dependencies and the service extra only. Which
    # distributions those pull in comes from the installed packages' metadata; which
    # distribution provides a module, too.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(text) for text in project["dependencies"]]
    declared += [Requirement(text) for text in project["optional-dependencies"]["service"]]
    installed = installed_closure(declared)
    providers = metadata.packages_distributions()
    missing = {
        module: providers.get(module, [module])
        for module in api_third_party_imports()
        if not any(canonicalize_name(dist) in installed for dist in providers.get(module, [module]))
    }
    assert not missing, f"modules the API imports that .[service] does not install: {missing}"


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"redis", "api", "worker"}
    redis_command = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis_command
    # A job whose 202 was sent must survive a Redis crash, as the recovery tests assume.
    assert "--appendfsync always" in redis_command
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
