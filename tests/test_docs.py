"""The README's examples run against a real gateway, so the docs cannot drift from the code."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from opsgate.domain.config import load_config
from tests.support import Gateway

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks("sh")[0].strip().splitlines()
    assert first == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_example(embedded: Gateway) -> None:
    [example] = blocks("python")
    code = example.replace("http://127.0.0.1:8080/v1", embedded.base_url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue()
    assert re.search(r"\[\d+ tokens\]", printed)
    assert printed.strip().endswith("384")


def test_readme_curl_example(embedded: Gateway) -> None:
    curl = next(b for b in blocks("sh") if b.startswith("curl"))
    body = re.search(r"-d '(.*)'", curl, flags=re.S)
    assert body is not None
    response = httpx.post(
        embedded.base_url + "/chat/completions",
        content=body.group(1),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def test_example_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # The auth example reads its bootstrap key from the environment, with no default on purpose.
    monkeypatch.setenv("OPSGATE_ADMIN_KEY", "sk-admin-" + "d" * 40)
    for path in (ROOT / "examples").glob("*.yaml"):
        load_config(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opsgate.cli.main",
            "config",
            "check",
            str(ROOT / "examples" / "upstream.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_readme_record_config_example_is_valid() -> None:
    import yaml

    from opsgate.domain.config import parse_config

    [example] = [b for b in blocks("yaml") if "record:" in b]
    config = parse_config(yaml.safe_load(example))
    assert config.record.encryption.enabled and config.models[0].price is not None


def test_readme_routing_example_is_valid() -> None:
    import yaml

    from opsgate.domain.config import parse_config

    [example] = [b for b in blocks("yaml") if "fallbacks" in b]
    config = parse_config(yaml.safe_load(example))
    assert config.models[0].routing.fallbacks == ["smollm2"]


def test_readme_cache_and_limits_example_is_valid() -> None:
    import yaml

    from opsgate.domain.config import parse_config

    [example] = [b for b in blocks("yaml") if "limits:" in b and "cache:" in b]
    config = parse_config(yaml.safe_load(example))
    assert config.cache.enabled and config.limits.rules[1].spend_per_day == 20.0


def test_readme_auth_example_and_keys_cli(tmp_path: Path) -> None:
    import yaml

    from opsgate.domain.config import interpolate_env, parse_config

    [example] = [b for b in blocks("yaml") if "auth:" in b]
    tree = interpolate_env(yaml.safe_load(example), {"OPSGATE_ADMIN_KEY": "x" * 32})
    tree["record"] = {"store": f"sqlite:///{tmp_path}/r.db", "journal_dir": str(tmp_path / "journal")}
    config = parse_config(tree)
    assert config.auth.enabled and config.auth.admin_key is not None
    config_file = tmp_path / "auth.yaml"
    config_file.write_text(yaml.safe_dump(tree))
    [commands] = [b for b in blocks("sh") if "opsgate keys create" in b]
    create = commands.splitlines()[0].split("#")[0].split()
    opsgate = str(Path(sys.executable).parent / "opsgate")
    # Key commands never create a store: the gateway's first start, or migrate, does.
    made = subprocess.run([opsgate, "migrate", "--config", str(config_file)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    out = subprocess.run([opsgate, *create[1:], "--config", str(config_file), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import orjson

    created = orjson.loads(out.stdout)
    assert created["secret"].startswith("og_") and created["tenant"] == "acme" and created["role"] == "developer"
    listed = subprocess.run(
        [opsgate, "keys", "list", "--tenant", "acme", "--config", str(config_file), "--json"],
        capture_output=True,
        text=True,
    )
    assert [k["id"] for k in orjson.loads(listed.stdout)] == [created["id"]]
    assert created["secret"] not in listed.stdout
