"""SLO windows are bounded: a 99999999999999999999d window passed `config check` and then crashed
`opsgate slo status` (an epoch too large for SQLite's INTEGER). Found by the outside probe."""

from __future__ import annotations

import pytest

from opsgate.domain.config import ConfigError, parse_config


def _config(window: str) -> dict[str, object]:
    return {"slo": {"objectives": [{"name": "refusals", "sli": "refusal_rate", "target": 0.05, "window": window}]}}


@pytest.mark.parametrize("window", ["99999999999999999999d", "401d", "58w", "1e9s"])
def test_a_window_past_400_days_is_refused(window: str) -> None:
    with pytest.raises(ConfigError, match="window"):
        parse_config(_config(window))


@pytest.mark.parametrize("window", ["400d", "30d", "5m"])
def test_windows_up_to_400_days_load(window: str) -> None:
    assert parse_config(_config(window)).slo.objectives[0].window == window
