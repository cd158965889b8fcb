"""Config loading: defaults, ${ENV} interpolation, and errors that name the path to the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.domain.config import ConfigError, LlamaCppDeployment, interpolate_env, load_config, parse_config


def test_embedded_default_config() -> None:
    config = load_config(None)
    assert [m.name for m in config.models] == ["smollm2", "all-minilm-l6-v2"]
    assert [m.kind for m in config.models] == ["chat", "embedding"]
    deployment = config.models[0].deployments[0]
    assert isinstance(deployment, LlamaCppDeployment) and deployment.n_threads == 1


def test_env_interpolation_with_default() -> None:
    tree = {"a": "${X}", "b": ["${MISSING:-fallback}", "pre-${X}-post"], "c": 3}
    assert interpolate_env(tree, {"X": "1"}) == {"a": "1", "b": ["fallback", "pre-1-post"], "c": 3}


def test_missing_env_names_the_path() -> None:
    with pytest.raises(ConfigError) as error:
        interpolate_env({"models": [{"deployments": [{"api_key": "${NOPE_KEY}"}]}]}, {})
    assert error.value.problems == ["models[0].deployments[0].api_key: environment variable NOPE_KEY is not set"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"models": [{"name": "m", "deployments": [{"type": "llama_cpp", "n_threads": 0}]}]},
            "models[0].deployments[0].n_threads: Input should be greater than 0",
        ),
        (
            {"models": [{"name": "m", "deployments": [{"type": "openai", "base_url": "ftp://x", "model": "y"}]}]},
            "models[0].deployments[0].base_url: Value error, must be an http:// or https:// URL",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "deployments": [
                            {
                                "type": "openai",
                                "base_url": "http://x/v1",
                                "model": "y",
                                "timeouts": {"connect": -1},
                            }
                        ],
                    }
                ]
            },
            "models[0].deployments[0].timeouts.connect: Input should be greater than 0",
        ),
        (
            {"models": [{"name": "m", "deployments": [{"type": "carrier-pigeon"}]}]},
            "models[0].deployments[0]: Input tag 'carrier-pigeon' found using 'type' does not match",
        ),
        (
            {"models": [{"name": "m", "deployments": []}]},
            "models[0].deployments: List should have at least 1 item",
        ),
        ({"server": {"port": 70000}}, "server.port: Input should be less than or equal to 65535"),
        ({"server": {"prot": 1}}, "server.prot: Extra inputs are not permitted"),
        (
            {
                "models": [
                    {"name": "m", "deployments": [{"type": "llama_cpp"}]},
                    {"name": "m", "deployments": [{"type": "llama_cpp"}]},
                ]
            },
            "model name 'm' is used twice",
        ),
    ],
)
def test_errors_name_the_path(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert any(p.startswith(expected) or expected in p for p in error.value.problems), error.value.problems


def test_env_values_are_coerced_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_LLAMA_THREADS", "3")
    deployment = load_config(None).models[0].deployments[0]
    assert isinstance(deployment, LlamaCppDeployment) and deployment.n_threads == 3
    monkeypatch.setenv("OPSGATE_LLAMA_THREADS", "many")
    with pytest.raises(ConfigError) as error:
        load_config(None)
    assert "models[0].deployments[0].n_threads" in str(error.value)


def test_yaml_file_with_secret_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-from-env")
    path = tmp_path / "gw.yaml"
    path.write_text(
        "models:\n"
        "  - name: gpt\n"
        "    deployments:\n"
        "      - type: openai\n"
        "        base_url: http://127.0.0.1:9/v1\n"
        "        model: gpt-4o-mini\n"
        "        api_key: ${UPSTREAM_KEY}\n"
    )
    config = load_config(path)
    deployment = config.models[0].deployments[0]
    assert deployment.api_key is not None and deployment.api_key.get_secret_value() == "sk-from-env"  # type: ignore[union-attr]
    assert "sk-from-env" not in repr(config)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_kind_inference_and_conflicts() -> None:
    with pytest.raises(ConfigError, match="embedding alias cannot use a llama_cpp"):
        parse_config({"models": [{"name": "e", "kind": "embedding", "deployments": [{"type": "llama_cpp"}]}]})
    config = parse_config(
        {
            "models": [
                {
                    "name": "e",
                    "kind": "embedding",
                    "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "x"}],
                }
            ]
        }
    )
    assert config.models[0].kind == "embedding"


@pytest.mark.parametrize(
    "extra",
    [{"api_key": "sk-up"}, {"headers": {"Authorization": "Bearer sk-up"}}],
)
def test_credentials_in_base_url_and_a_bearer_key_are_refused_at_load(extra: dict[str, object]) -> None:
    # Both at once made aiohttp refuse every call (a 500 per request); now the file is refused, secret unsaid.
    deployment = {"type": "openai", "base_url": "http://user:pw-123@up.example/v1", "model": "m", **extra}
    with pytest.raises(ConfigError) as error:
        parse_config({"models": [{"name": "m", "deployments": [deployment]}]})
    (problem,) = error.value.problems
    assert problem.startswith("models[0].deployments[0]: ") and "base_url carries credentials" in problem
    assert "pw-123" not in problem and "sk-up" not in problem


def test_credentials_in_base_url_alone_are_fine() -> None:
    deployment = {"type": "openai", "base_url": "http://user:pw@up.example/v1", "model": "m"}
    parse_config({"models": [{"name": "m", "deployments": [deployment]}]})
