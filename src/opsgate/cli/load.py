"""``opsgate load``: steady traffic through a running gateway, to watch /ui, /metrics and the SLOs move.

Open-loop at a fixed rate (a slow gateway gets a growing backlog, as with real clients, up to
``--concurrency`` in flight), through the official OpenAI SDK, with a rich progress bar and a
summary of status codes and latency percentiles at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import click
import openai
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from opsgate.cli.options import LOCAL_GATEWAY, gateway_url_option

console = Console()


async def _one(client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens
        )
        status = 200
    except openai.APIStatusError as error:
        status = error.status_code
    except openai.APIConnectionError:
        status = 0  # no answer at all
    return status, (time.perf_counter() - started) * 1000


async def run_load(
    url: str, api_key: str, model: str, rate: float, duration: float, concurrency: int, max_tokens: int
) -> tuple[Counter[int], list[float]]:
    """Send ``rate`` requests per second for ``duration`` seconds; status counts and latencies (ms)."""
    client = openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=120)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    slots = asyncio.Semaphore(concurrency)
    total = max(1, int(rate * duration))

    async def fire(index: int) -> None:
        async with slots:
            status, ms = await _one(client, model, f"load test request {index}: say hello", max_tokens)
        statuses[status] += 1
        latencies.append(ms)
        progress.advance(task)

    with Progress(
        TextColumn("[bold]load[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn()
    ) as progress:
        task = progress.add_task("requests", total=total)
        started = time.perf_counter()
        pending = []
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(fire(index)))
        await asyncio.gather(*pending)
    await client.close()
    return statuses, latencies


@click.command()
@gateway_url_option(default=LOCAL_GATEWAY, help="The gateway's /v1 base URL.")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default="none", help="Key (env OPSGATE_API_KEY).")
@click.option("-m", "--model", default="smollm2", show_default=True)
@click.option("--rate", type=click.FloatRange(min=0.01), default=2.0, show_default=True, help="Requests per second.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=16, show_default=True)
def load(url: str, api_key: str, model: str, rate: float, duration: float, concurrency: int, max_tokens: int) -> None:
    """Send steady traffic through a running gateway and summarise what came back."""
    statuses, latencies = asyncio.run(run_load(url, api_key, model, rate, duration, concurrency, max_tokens))
    table = Table("status", "requests")
    for status, count in sorted(statuses.items()):
        table.add_row("no answer" if status == 0 else str(status), str(count))
    console.print(table)
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100)
        console.print(f"latency p50 {cuts[49]:.1f} ms  p95 {cuts[94]:.1f} ms  p99 {cuts[98]:.1f} ms")
    if statuses.get(200, 0) != sum(statuses.values()):
        raise SystemExit(1)
