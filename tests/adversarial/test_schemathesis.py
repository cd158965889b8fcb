"""schemathesis over the whole OpenAPI document, with the admin key, against a real gateway on loopback.

Positive and negative (schema-violating) cases for every operation. The assertions: no response is a
5xx, and every inference request it sent is found in the request log afterwards (by the gateway's
``x-request-id``). Deterministic, so CI sees the same cases each run; ``OPSGATE_FUZZ_RANDOM=1`` explores.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode

from opsgate import __version__
from opsgate.domain.config import parse_config
from opsgate.server.openapi import openapi_document
from tests.adversarial.conftest import ADMIN_KEY, Target, hostile_config
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, isolated

EXAMPLES = int(os.environ.get("OPSGATE_FUZZ_EXAMPLES", "25"))

schema = schemathesis.openapi.from_dict(openapi_document(__version__))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    deterministic=os.environ.get("OPSGATE_FUZZ_RANDOM") != "1",
    allow_x00=True,
)

SENT: list[tuple[str, str, int, str | None]] = []  # (method, path, status, gateway request id)
ALIASES = {"/v1/chat/completions": "up", "/v1/completions": "up", "/v1/embeddings": "up-embed"}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    upstream = FakeUpstream().start()
    config = isolated(parse_config(hostile_config(upstream.base_url)), str(tmp_path_factory.mktemp("fuzz")))
    gateway = Gateway(config, keep_record_config=True)
    gateway.server.start("/healthz")
    target = Target(gateway, upstream)
    yield target
    target.client.close()
    gateway.server.stop()
    upstream.stop()


def _aim(case: Any) -> None:
    """Point half the generated inference bodies at a real alias, so cases get past the 404 to the backend."""
    alias = ALIASES.get(case.path)
    body = case.body
    if not (alias and isinstance(body, dict) and isinstance(body.get("model"), str)):
        return
    if zlib.crc32(repr(sorted(body)).encode()) % 2 == 0:
        body["model"] = alias


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error(case: Any, fuzz_target: Target) -> None:
    _aim(case)
    response = case.call(base_url=fuzz_target.gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    request_id = response.headers.get("x-request-id")
    if isinstance(request_id, list):  # schemathesis keeps every header as a list of values
        request_id = request_id[0] if request_id else None
    SENT.append((case.method, case.path, response.status_code, request_id))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
        f"reproduce: {case.as_curl_command()}"
    )


def test_every_inference_request_was_recorded(fuzz_target: Target) -> None:
    inference = [sent for sent in SENT if sent[1] in ALIASES and sent[0] == "POST"]
    if not SENT:
        pytest.skip("run with the fuzz cases (they fill SENT)")
    assert inference, "the fuzz run sent no inference request"
    missing_id = [sent for sent in inference if not sent[3]]
    assert not missing_id, f"answered without an x-request-id: {missing_id[:5]}"
    fuzz_target.flush()
    unrecorded = [sent for sent in inference if sent[3] and fuzz_target.stored(sent[3]) is None]
    assert not unrecorded, f"{len(unrecorded)} of {len(inference)} inference requests not recorded: {unrecorded[:5]}"
