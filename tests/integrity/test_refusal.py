"""A modified model file takes its deployment out of service: at load (manifest) and periodically."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest

from opsgate.domain.config import parse_config
from opsgate.integrity.manifest import Manifest, build_manifest
from tests.fake_upstream import FakeUpstream
from tests.integrity.test_manifest import fake_gguf, flip_byte
from tests.support import start_gateway, wait_until


def audit_entries(url: str, action: str) -> list[dict[str, object]]:
    return [e for e in httpx.get(url + "/admin/audit").json()["data"] if e["action"] == action]


def test_tampered_gguf_is_refused_at_load_and_the_router_falls_back(
    tmp_path: Path, upstream_server: FakeUpstream
) -> None:
    model = fake_gguf(tmp_path / "tiny.gguf")
    manifest_path = tmp_path / "models.json"
    local = {"type": "llama_cpp", "model_path": str(model)}
    config = {
        "models": [
            # The local model first; the upstream only as a backup.
            {
                "name": "tiny",
                "deployments": [
                    local,
                    {"type": "openai", "base_url": upstream_server.base_url, "model": "m", "weight": 0},
                ],
            },
            {"name": "solo", "deployments": [local]},
        ],
        "integrity": {"manifest": str(manifest_path)},
    }
    build_manifest(parse_config(config)).write(manifest_path)
    flip_byte(model)

    gateway = start_gateway(config, ready=False)
    try:
        registry = gateway.app.state.gateway.registry
        assert wait_until(lambda: all(b.load_error for b in registry.all() if b.label != "tiny#1"), timeout=30)
        ready = httpx.get(gateway.url + "/readyz")
        assert ready.status_code == 503  # "solo" has nothing left to serve it
        solo = ready.json()["deployments"]["solo#0"]
        assert solo["ready"] is False and solo["integrity"]["ok"] is False
        assert "digest mismatch" in solo["integrity"]["error"] and "integrity" in solo["error"]

        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        served = client.chat.completions.with_raw_response.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        )
        assert served.headers["x-opsgate-deployment"] == "tiny#1"  # fell back to the upstream
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "model_integrity_failed"  # type: ignore[index]

        entries = audit_entries(gateway.url, "model_integrity_failed")
        assert {e["target"] for e in entries} == {"tiny#0", "solo#0"}
        assert all(e["details"]["phase"] == "load" for e in entries)  # type: ignore[index]
        assert httpx.get(gateway.url + "/admin/audit/verify").json()["ok"] is True
    finally:
        gateway.server.stop()


def test_intact_gguf_passes_the_check_and_reaches_the_loader(tmp_path: Path) -> None:
    model = fake_gguf(tmp_path / "tiny.gguf")
    manifest_path = tmp_path / "models.json"
    config = {
        "models": [{"name": "tiny", "deployments": [{"type": "llama_cpp", "model_path": str(model)}]}],
        "integrity": {"manifest": str(manifest_path)},
    }
    Manifest(build_manifest(parse_config(config)).files).write(manifest_path)
    gateway = start_gateway(config, ready=False)
    try:
        [backend] = gateway.app.state.gateway.registry.all()
        assert wait_until(lambda: backend.load_error is not None, timeout=30)
        assert "integrity" not in backend.load_error  # llama.cpp itself rejects the fake file
        status = httpx.get(gateway.url + "/readyz").json()["deployments"]["tiny#0"]["integrity"]
        assert status["ok"] is True and status["reference"] == "manifest" and status["checks"] == 1
    finally:
        gateway.server.stop()


def test_periodic_check_takes_a_modified_embedding_model_out_of_service(tmp_path: Path) -> None:
    from opsgate.backends.minilm import default_minilm_dir

    model_dir = tmp_path / "minilm"
    shutil.copytree(default_minilm_dir(), model_dir)
    config = {
        "models": [{"name": "emb", "deployments": [{"type": "sentence_embedding", "model_path": str(model_dir)}]}],
        "integrity": {"check_interval_seconds": 0.3},  # no manifest: the digest at load is the reference
    }
    gateway = start_gateway(config)
    try:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        assert len(client.embeddings.create(model="emb", input="hello").data[0].embedding) == 384
        state = httpx.get(gateway.url + "/readyz").json()["deployments"]["emb#0"]["integrity"]
        assert state["ok"] is True and state["reference"] == "first_load"

        flip_byte(model_dir / "model.safetensors", offset=(model_dir / "model.safetensors").stat().st_size - 10)
        assert wait_until(lambda: httpx.get(gateway.url + "/readyz").status_code == 503, timeout=20)
        state = httpx.get(gateway.url + "/readyz").json()["deployments"]["emb#0"]
        assert "model.safetensors: digest mismatch" in state["integrity"]["error"]
        metrics = httpx.get(gateway.url + "/metrics").text
        assert 'opsgate_deployment_integrity_ok{alias="emb",deployment="emb#0"} 0.0' in metrics

        with pytest.raises(openai.APIStatusError) as refused:
            client.embeddings.create(model="emb", input="hello")
        assert refused.value.status_code == 503
        # The backend refuses by itself too, for callers that do not go through the router.
        [backend] = gateway.app.state.gateway.registry.all()
        assert backend.is_ready() is False and backend.model is None

        # The audit entry is appended after the refusal: on a loaded machine it can trail it (seen once).
        assert wait_until(lambda: bool(audit_entries(gateway.url, "model_integrity_failed")), timeout=30)
        [entry] = audit_entries(gateway.url, "model_integrity_failed")
        assert entry["target"] == "emb#0" and entry["details"]["phase"] == "periodic"  # type: ignore[index]
        assert str((model_dir / "model.safetensors").resolve()) in str(entry["details"])
    finally:
        gateway.server.stop()
