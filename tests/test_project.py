"""The project's shape: settings that refuse unsafe production starts, a valid compose file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "crearis.settings", **env},
        capture_output=True,
        text=True,
    )


def test_production_without_secret_key_refuses_to_start():
    result = run_python("import django; django.setup()", DEBUG="False")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_with_secret_key_starts():
    result = run_python("import django; django.setup()", DEBUG="False", SECRET_KEY="s3cret")
    assert result.returncode == 0, result.stderr


def test_without_broker_celery_runs_tasks_inline():
    result = run_python(
        "import django; django.setup(); from crearis.celery import app; "
        "print(app.conf.task_always_eager)",
        CELERY_BROKER_URL="",
    )
    assert result.stdout.strip() == "True", result.stderr


def test_compose_file_validates():
    compose = (
        ["docker", "compose"]
        if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        else [shutil.which("docker-compose") or "docker-compose"]
    )
    result = subprocess.run(
        [*compose, "-f", "docker/compose.yaml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [*compose, "-f", "docker/compose.yaml", "config", "--services"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert set(services) == {"postgres", "redis", "web", "worker", "beat"}


def test_every_dockerfile_copy_source_exists():
    """The image builds only if what it copies is in the build context (the repository)."""
    sources = []
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert "templates" in sources
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert missing == []
