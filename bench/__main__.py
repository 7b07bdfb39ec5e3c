"""Run the benchmark suite: `python -m bench [--quick] [--only N ...]`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.common import Row, print_table, write_json

ALL = [1, 2, 3, 4, 5, 6, 7, 8]


def main() -> int:
    """Start what the benchmarks need, run them, print the table and write latest.json."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--only", nargs="*", type=int, help="benchmark numbers to run")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/latest.json)")
    args = parser.parse_args()
    wanted = set(args.only or ALL)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if wanted & {1, 2, 3, 4, 7}:
            from svrctl.prefect_server import start_prefect_server

            print("starting a Prefect server ...", file=sys.stderr)
            server = start_prefect_server(Path(tmp) / "prefect")
        try:
            if 8 in wanted:
                from bench import cli_startup

                print("8 CLI start-up ...", file=sys.stderr)
                rows.append(cli_startup.run(args.quick))
            if 5 in wanted:
                from bench import sync

                print("5 sync ...", file=sys.stderr)
                rows.append(sync.run(args.quick))  # starts its own Prefect servers
            if 6 in wanted:
                from bench import history_scale

                print("6 history at scale ...", file=sys.stderr)
                rows.extend(history_scale.run(args.quick))
            if 1 in wanted and server is not None:
                from bench import engine_overhead

                print("1 engine overhead ...", file=sys.stderr)
                rows.append(engine_overhead.run(args.quick, server.api_url))
            if 4 in wanted and server is not None:
                from bench import fanout

                print("4 fan-out ...", file=sys.stderr)
                rows.append(fanout.run(args.quick, server.api_url))
            if 2 in wanted and server is not None:
                from bench import quick_run

                print("2 quick run latency ...", file=sys.stderr)
                rows.append(quick_run.run(args.quick, server.api_url))
            if 3 in wanted and server is not None:
                from bench import schedule_accuracy

                print("3 schedule accuracy ...", file=sys.stderr)
                rows.append(schedule_accuracy.run(args.quick, server.api_url))
            if 7 in wanted and server is not None:
                from bench import worker_memory

                print("7 worker memory ...", file=sys.stderr)
                rows.append(worker_memory.run(args.quick, server.api_url))
        finally:
            if server is not None:
                server.stop()
    rows.sort(key=lambda r: int(r.name.split()[0]))
    print_table(rows)
    path = write_json(rows, args.quick, args.output)
    print(f"\nwritten to {path}")
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
