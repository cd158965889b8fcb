"""Every example config starts: ``opsgate serve --config examples/<name>.yaml`` as a real process.

Upstream URLs point at the fake upstream, the PostgreSQL example at a scratch schema, the Redis
example under a scratch key prefix; each gateway then answers one chat request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.limits.support import scratch_prefix
from tests.store.conftest import fresh_pg_schema
from tests.support import serve_process

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(path.name for path in (ROOT / "examples").glob("*.yaml"))
ADMIN_KEY = "sk-admin-" + "c" * 40
# The alias each example is called through (upstream.yaml also loads the embedded models).
ALIAS = {"upstream.yaml": "llama-3.1-8b", "guards.yaml": "smollm2", "releases.yaml": "assistant"}
START_SECONDS = 180.0  # workers, guard models or embedded models loading on a loaded machine


@pytest.fixture()
def pg_schema() -> Iterator[str]:
    with fresh_pg_schema("opsgate_example") as url:
        yield url


def test_there_is_an_example_per_feature() -> None:
    wanted = {"upstream.yaml", "guards.yaml", "slos.yaml", "auth-tenants.yaml", "redis-limits.yaml", "postgres.yaml"}
    assert wanted <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_starts_and_answers(
    name: str, tmp_path: Path, upstream: FakeUpstream, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("UPSTREAM_URL", "VLLM_URL", "CURRENT_BASE_URL", "CANDIDATE_BASE_URL"):
        monkeypatch.setenv(variable, upstream.base_url)
    monkeypatch.setenv("OPSGATE_ADMIN_KEY", ADMIN_KEY)
    if name == "postgres.yaml":
        monkeypatch.setenv("OPSGATE_RECORD_STORE", pg_schema)
    else:
        monkeypatch.delenv("OPSGATE_RECORD_STORE", raising=False)
    with scratch_prefix() as prefix:
        monkeypatch.setenv("OPSGATE_LIMITS_PREFIX", prefix)
        log = tmp_path / "serve.log"
        # Run from a scratch directory: relative paths (the default SQLite store, the journal) land there.
        with serve_process(ROOT / "examples" / name, log, timeout=START_SECONDS, cwd=tmp_path) as (_, url):
            response = httpx.post(
                url + "/v1/chat/completions",
                json={
                    "model": ALIAS.get(name, "chat"),
                    "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 8,
                },
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=60,
            )
    assert response.status_code == 200, (response.text, log.read_text())
    assert response.json()["choices"][0]["message"]["content"]
