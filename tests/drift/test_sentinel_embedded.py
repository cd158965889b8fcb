"""The sentinel against the real embedded model (SmolLM2 on llama.cpp), driven by the ``opsgate sentinel``
CLI over HTTP: at temperature 0 with a fixed seed, two runs give the same answers, so no change."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import load_config
from opsgate.domain.sentinel_config import SentinelConfig
from tests.support import Gateway


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    config = load_config(None)
    sentinel = SentinelConfig.model_validate(
        {
            "enabled": True,
            "first_run_seconds": 86400,  # run by hand below
            "max_tokens": 12,
            "models": {
                "smollm2": {
                    "prompts": [
                        {"id": "capital", "prompt": "What is the capital of France? Answer in one word."},
                        {"id": "count", "prompt": "Count from one to five."},
                    ]
                }
            },
        }
    )
    served = Gateway(config.model_copy(update={"sentinel": sentinel}))
    served.server.start("/readyz", timeout=180)
    yield served
    served.server.stop()


def sentinel(gateway: Gateway, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sentinel", "--url", gateway.base_url, *args])
    return result.exit_code, result.output


def test_two_runs_of_the_embedded_model_do_not_change(gateway: Gateway) -> None:
    code, output = sentinel(gateway, "run", "--json")
    assert code == 0, output
    first = json.loads(output)["data"]
    assert [(r["deployment"], r["status"], r["failed"]) for r in first] == [("smollm2#0", "baseline", 0)]

    code, output = sentinel(gateway, "run", "--json")
    assert code == 0, output
    second = json.loads(output)["data"]
    assert [(r["status"], r["changed"], r["share"]) for r in second] == [("unchanged", 0, 0.0)]

    code, output = sentinel(gateway, "show", second[0]["id"], "--json")
    assert code == 0, output
    items = json.loads(output)["items"]
    assert [(i["prompt_id"], i["status"], i["exact"]) for i in items] == [
        ("capital", "same", True),
        ("count", "same", True),
    ]
    assert all(i["answer"] for i in items)  # the model really answered

    code, output = sentinel(gateway, "show", second[0]["id"])  # the table form
    assert code == 0 and "capital" in output and "same" in output
    code, output = sentinel(gateway, "status")
    assert code == 0, output
    assert "runs stored: 2" in output and "behaviour changes seen: 0" in output


def test_the_cli_reports_a_client_error_without_a_traceback(gateway: Gateway) -> None:
    code, output = sentinel(gateway, "baseline", "--alias", "nope")
    assert code == 1 and "HTTP 404" in output and "Traceback" not in output
    code, output = sentinel(gateway, "show", "sen_../../admin")
    assert code == 1 and "HTTP 404" in output
