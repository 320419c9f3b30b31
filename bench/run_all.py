"""`make bench`: run every benchmark in turn; each writes its own section of BENCHMARKS.md."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = (
    "bench.service_throughput",
    "bench.bench_model",
    "bench.bench_upscaler",
    "bench.bench_train",
)


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"skipped: {exc}")
            continue
        failed += int(module.main() != 0)
    return failed


if __name__ == "__main__":
    sys.exit(main())
