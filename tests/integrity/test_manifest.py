"""The manifest file, the hashing and ``opsgate models manifest write|check``."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.integrity import Manifest, ManifestError, sha256_file


def fake_gguf(path: Path, size: int = 64 * 1024) -> Path:
    """Bytes that look like a GGUF header; the digest is all that matters here."""
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(i % 251 for i in range(size)))
    return path


def flip_byte(path: Path, offset: int = 1000) -> None:
    """Change one byte in place, keeping the size (the tampering that a size check would miss)."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x01]))


def write_config(tmp_path: Path, model: Path, manifest: Path) -> Path:
    path = tmp_path / "opsgate.yaml"
    config = {
        "models": [{"name": "tiny", "deployments": [{"type": "llama_cpp", "model_path": str(model)}]}],
        "integrity": {"manifest": str(manifest)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_manifest_write_then_check_then_tamper(tmp_path: Path) -> None:
    model = fake_gguf(tmp_path / "tiny.gguf")
    manifest = tmp_path / "manifests" / "models.json"
    config = str(write_config(tmp_path, model, manifest))
    runner = CliRunner()

    written = runner.invoke(cli, ["models", "manifest", "write", "--config", config])
    assert written.exit_code == 0, written.output
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    stored = orjson.loads(manifest.read_bytes())
    assert stored["version"] == 1
    assert stored["files"] == {str(model.resolve()): {"sha256": expected, "size": model.stat().st_size}}

    checked = runner.invoke(cli, ["models", "manifest", "check", "--config", config, "--json"])
    assert checked.exit_code == 0 and orjson.loads(checked.output) == {"ok": True, "files": 1, "problems": []}

    flip_byte(model)
    tampered = runner.invoke(cli, ["models", "manifest", "check", "--config", config, "--json"])
    assert tampered.exit_code == 1
    [problem] = orjson.loads(tampered.output)["problems"]
    assert problem["problem"] == "digest mismatch" and problem["expected"] == expected
    assert problem["actual"] == hashlib.sha256(model.read_bytes()).hexdigest()

    model.unlink()
    missing = runner.invoke(cli, ["models", "manifest", "check", "--config", config, "--json"])
    assert missing.exit_code == 1 and "missing or unreadable" in missing.output


def test_models_still_lists_aliases(tmp_path: Path) -> None:
    config = write_config(tmp_path, fake_gguf(tmp_path / "m.gguf"), tmp_path / "x.json")
    listed = CliRunner().invoke(cli, ["models", "--config", str(config)])
    assert listed.exit_code == 0 and "tiny" in listed.output and "llama_cpp" in listed.output


def test_manifest_without_a_path_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"models": []}))
    result = CliRunner().invoke(cli, ["models", "manifest", "write", "--config", str(config)])
    assert result.exit_code == 2 and "integrity.manifest" in result.output


def test_manifest_reading(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"x")
    (tmp_path / "rel.json").write_text('{"version": 1, "files": {"m.gguf": {"sha256": "AB", "size": 1}}}')
    loaded = Manifest.load(tmp_path / "rel.json")
    assert list(loaded.files) == [str((tmp_path / "m.gguf").resolve())]  # relative to the manifest's folder
    assert loaded.files[str((tmp_path / "m.gguf").resolve())].sha256 == "ab"
    (tmp_path / "bad.json").write_text('{"version": 1, "files": {"m.gguf": {"size": 1}}}')
    with pytest.raises(ManifestError, match="needs sha256"):
        Manifest.load(tmp_path / "bad.json")
    with pytest.raises(ManifestError, match="cannot read"):
        Manifest.load(tmp_path / "absent.json")


async def test_hashing_a_large_file_leaves_the_event_loop_free(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with big.open("wb") as handle:
        for _ in range(96):
            handle.write(chunk)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    digest = await asyncio.to_thread(sha256_file, big)
    done.set()
    await ticking
    assert digest.size == 96 * 1024 * 1024
    assert digest.sha256 == hashlib.sha256(chunk * 96).hexdigest()
    assert len(gaps) > 3 and max(gaps) < 0.1, f"the loop stalled for {max(gaps) * 1000:.0f} ms"
