"""``python -m bench``: run the benchmark scenarios, print a table and a JSON document, exit non-zero on
any lost, duplicated or out-of-order message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench import abuse, capacity, edits, gateway, scenarios, search
from bench.procs import RESULTS, ServerProcess, git_commit, isolate_driver, machine_info, raise_fd_limit
from bench.scenarios import Context, Params, Result

SCENARIOS: dict[str, Callable[[Context], Awaitable[Result]]] = {
    "limits": scenarios.limits,
    "pairs": scenarios.pairs,
    "pairs-redis": scenarios.pairs_redis,
    "group": scenarios.group,
    "edits": edits.edits,
    "login": scenarios.login,
    "idle": capacity.idle,
    "history": capacity.history,
    "search": search.search,
    "abuse": abuse.abuse,
    "gateway": gateway.gateway,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Params()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="run only this one (repeatable)"
    )
    parser.add_argument("--smoke", action="store_true", help="every scenario with tiny parameters (CI)")
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="the driver shares the servers' CPUs (default: one of its own)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server in peak and paced windows (bench/results)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where the JSON goes")
    for item in dataclasses.fields(Params):
        flag = "--" + item.name.replace("_", "-")
        parser.add_argument(
            flag, type=type(getattr(defaults, item.name)), help=f"default {getattr(defaults, item.name)}"
        )
    return parser.parse_args(argv)


def params_from(args: argparse.Namespace) -> Params:
    params = Params.smoke() if args.smoke else Params()
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Params) if getattr(args, f.name) is not None
    }
    return dataclasses.replace(params, **given)


async def py_spy(server: ServerProcess, name: str) -> None:
    """Sample the server's stacks until cancelled; writes collapsed stacks for flame graphs."""
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    output = RESULTS / f"{name}-profile.txt"
    process = await asyncio.create_subprocess_exec(
        executable, "record", "--pid", str(server.pid), "--format", "raw", "--nonblocking",
        "--rate", "250", "--output", str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await process.wait()
    except asyncio.CancelledError:
        process.send_signal(signal.SIGINT)
        await asyncio.shield(process.wait())
        raise


def _flatten(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def print_table(results: list[Result], file: TextIO = sys.stdout) -> None:
    for result in results:
        parameters = ", ".join(f"{k}={v}" for k, v in result.parameters.items())
        print(f"\n== {result.name}  ({parameters})", file=file)
        rows = _flatten(result.figures)
        width = max((len(name) for name, _ in rows), default=10)
        for name, value in rows:
            print(f"  {name:<{width}}  {value}", file=file)
        for target in result.targets:
            verdict = {True: "met", False: "NOT MET", None: "not measured"}[target["met"]]
            print(f"  [{verdict:^12}] {target['target']}: {target['value']}", file=file)
        for note in result.notes:
            print(f"  note: {note}", file=file)
        for failure in result.failures:
            print(f"  FAILED: {failure}", file=file)


async def run(args: argparse.Namespace) -> int:
    params = params_from(args)
    placement = {} if args.shared_cpus else isolate_driver()
    ctx = Context(params=params, profile=py_spy if args.profile else None)
    names = args.scenario or list(SCENARIOS)
    results: list[Result] = []
    started = time.perf_counter()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        scenario_started = time.perf_counter()
        try:
            result = await SCENARIOS[name](ctx)
        except Exception as exc:
            traceback.print_exc()
            result = Result(name, {}, failures=[f"crashed: {type(exc).__name__}: {exc}"])
        result.figures["scenario_seconds"] = round(time.perf_counter() - scenario_started, 1)
        results.append(result)
        print_table([result], file=sys.stderr)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "smoke": args.smoke,
        "ok": not any(r.failures for r in results),
        "seconds": round(time.perf_counter() - started, 1),
        "git": git_commit(),
        "machine": {**machine_info(), "driver_isolated": bool(placement), **placement},
        "parameters": dataclasses.asdict(params),
        "scenarios": {r.name: dataclasses.asdict(r) for r in results},
    }
    print_table(results)
    text = json.dumps(document, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    if not document["ok"]:
        print("\nFAILED: see the FAILED lines above", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    args = parse_args()
    raise_fd_limit()
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    sys.exit(runner(run(args)))


if __name__ == "__main__":
    main()
