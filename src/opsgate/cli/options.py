"""Options that mean the same on every command: one spelling, one environment variable, one default."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.table import Column

F = TypeVar("F", bound=Callable[..., Any])
# The time window a report command looks back over when --since is left out (every command the same).
DEFAULT_SINCE = "7d"
LOCAL_GATEWAY = "http://127.0.0.1:8080/v1"


def gateway_url_option(*, dest: str = "url", default: str | None = None, help: str) -> Callable[[F], F]:
    """``--url`` (env ``OPSGATE_URL``): a running gateway's ``/v1`` base URL. ``--base-url``, the spelling
    some commands used before, still works and is hidden from ``--help``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def merged(*args: Any, base_url_alias: str | None = None, **kwargs: Any) -> Any:
            if base_url_alias is not None:
                kwargs[dest] = base_url_alias
            if kwargs.get(dest) is not None:
                check_gateway_url(kwargs[dest])
            return func(*args, **kwargs)

        hidden = click.option("--base-url", "base_url_alias", default=None, hidden=True)(merged)
        shown = click.option(
            "--url", dest, envvar="OPSGATE_URL", default=default, show_default=default is not None, help=help
        )
        return shown(hidden)  # type: ignore[return-value]

    return decorate


def check_gateway_url(value: str) -> None:
    """A usage error (exit 2) unless ``value`` is an http(s) URL with a host: a malformed one such as
    ``http://[::1`` would otherwise surface as a traceback from the HTTP client."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port raises on a bad one
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a URL ({error}).", param_hint="--url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL with a host.", param_hint="--url")


def since_option(help: str = "From this time: 30m, 24h, 7d (ago), ISO 8601 or epoch seconds.") -> Callable[[F], F]:
    """``--since`` with the one default every report command shares."""
    return click.option("--since", default=DEFAULT_SINCE, show_default=True, help=help)


def id_column(header: str, ids: Iterable[str]) -> Column:
    """A table column that shows ids whole at any terminal width (80 included): other columns shrink or
    wrap first, since an id cut to ``abc…`` cannot be passed to ``show`` or ``revoke``."""
    width = max([len(header), *(len(value) for value in ids)])
    return Column(header, no_wrap=True, min_width=width)
