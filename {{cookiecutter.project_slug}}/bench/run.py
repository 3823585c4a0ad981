"""Run the benchmarks against real Redis and PostgreSQL and write a Markdown report.

uv run python -m bench.run                     # every scenario, full size
uv run python -m bench.run --only throughput --count 500 --repeats 1
uv run --group bench-peers python -m bench.run --only peers --peers-count 300 --repeats 1   # needs the peers' group
uv run python -m bench.run --only uploads --out /tmp/uploads.md      # one scenario, its own report
uv run python -m bench.run --broker rabbitmq --only throughput --only enqueue --append   # RabbitMQ, same report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import harness

SCENARIOS = ("roundtrips", "throughput", "peers", "enqueue", "payloads", "uploads", "sse", "shutdown", "republish")


def _runners(args: argparse.Namespace) -> dict[str, Callable[[harness.Stack], Any]]:
    from . import payloads, peers, republish, roundtrips, shutdown, sse, throughput, uploads

    return {
        "roundtrips": lambda s: roundtrips.roundtrips(s, args.roundtrip_count),
        "throughput": lambda s: throughput.throughput(s, args.count, args.repeats),
        "peers": lambda s: peers.peers(s, args.peers_count, args.repeats),
        "enqueue": lambda s: throughput.enqueue_latency(s, args.latency_count),
        "payloads": lambda s: payloads.payloads(s, args.payload_tasks, args.payload_mb, args.repeats),
        "uploads": lambda s: uploads.upload_start(s, args.upload_count),
        "sse": lambda s: sse.sse(s, args.streams),
        "shutdown": lambda s: shutdown.shutdown(s, args.shutdown_rounds),
        "republish": lambda s: republish.republish(s, args.backlog),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def render(meta: dict[str, Any], results: dict[str, Any], elapsed: float) -> str:
    """Return the Markdown report of one run."""
    lines = ["# Benchmark results", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- whole run: {elapsed:.0f} s", ""]
    for scenario, data in results.items():
        lines += [f"## {scenario}", ""]
        rows = [(k, v) for k, v in data.items() if isinstance(v, dict)]
        scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
        if rows:
            columns = list(dict.fromkeys(c for _, v in rows for c in v))
            lines.append("| case | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---|" * len(columns))
            lines += ["| " + k + " | " + " | ".join(_fmt(v.get(c, "")) for c in columns) + " |" for k, v in rows]
            lines.append("")
        lines += [f"- {k}: **{_fmt(v)}**" for k, v in scalars]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--count", type=int, default=1500, help="no-op tasks per throughput measurement")
    parser.add_argument("--peers-count", type=int, default=5000, help="no-op tasks per system in the peers scenario")
    parser.add_argument("--roundtrip-count", type=int, default=500, help="calls per kind whose statements are counted")
    parser.add_argument("--latency-count", type=int, default=1000, help="enqueues per kind for latency")
    parser.add_argument("--payload-tasks", type=int, default=20)
    parser.add_argument("--payload-mb", type=float, default=5.0)
    parser.add_argument("--upload-count", type=int, default=50, help="POST /api/jobs per upload size")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent SSE streams")
    parser.add_argument("--repeats", type=int, default=3)
    # Each round waits out a 20 s task and two soft shutdowns: timers, not noise, so two rounds say enough.
    parser.add_argument("--shutdown-rounds", type=int, default=2, help="SIGTERM rounds of the shutdown scenario")
    parser.add_argument("--backlog", type=int, default=3000, help="queued idempotent tasks for republish")
    parser.add_argument("--out", type=Path, default=Path("bench/results.md"))
    parser.add_argument("--broker", choices=harness.BROKERS, default="redis", help="the broker the stack runs on")
    parser.add_argument("--append", action="store_true", help="add this run's sections to the report in --out")
    args = parser.parse_args(argv)

    started = time.monotonic()
    results: dict[str, Any] = {}
    with harness.stack(args.broker) as stack:
        runners = _runners(args)
        for name in args.only or SCENARIOS:
            if name not in runners:
                print(f"{name}: not available in this project", file=sys.stderr)
                continue
            print(f"running {name} ...", flush=True)
            began = time.monotonic()
            title = name if args.broker == "redis" else f"{name} on {args.broker}"
            results[title] = runners[name](stack)
            results[title]["scenario seconds"] = time.monotonic() - began
            print(json.dumps(results[title], indent=2, default=str), flush=True)
        meta = harness.machine()
    meta["broker"] = args.broker
    meta["parameters"] = (
        f"count={args.count}, peers-count={args.peers_count}, latency-count={args.latency_count}, "
        f"payloads={args.payload_tasks}x{args.payload_mb} MB, uploads={args.upload_count} per size, "
        f"streams={args.streams}, repeats={args.repeats}, shutdown rounds={args.shutdown_rounds}"
    )
    report = render(meta, results, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.exists():
        # The second run's machine lines and sections follow the first's under a heading of their own.
        report = args.out.read_text() + "\n" + report.replace("# Benchmark results", f"# On {args.broker}", 1)
    args.out.write_text(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
