"""Durable predictions per second vs Cog's server, side by side in one run.

Both servers do the same work per prediction (a 1024x1024 image, encoded as JPEG) and are
driven by the same async client with `Prefer: wait` at 1, 4 and 16 concurrent clients for a
fixed time each. We count successful predictions, rejected ones (Cog answers 409 while busy),
and p50/p99 latency of the successful ones; afterwards every dreamserve success must be found
in its store. Both servers run at once and are measured in alternating short slices, so
drifting background load falls on both alike. Results go into BENCHMARKS.md under
"## Service throughput".

    .venv/bin/python -m bench.service_throughput [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.report import write_section
from tests.support.live import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
COG_VENV = ROOT / "bench" / ".venv-cog"
CONCURRENCY = (1, 4, 16)
ROUNDS = 5  # alternating slices per server and concurrency
DS_INPUT = {"prompt": "bench", "size": "custom", "width": 1024, "height": 1024}


@dataclass
class Result:
    server: str
    clients: int
    seconds: float
    ok: int
    rejected: int
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def drive(url: str, body: dict[str, object], clients: int, seconds: float) -> Result:
    ok = rejected = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)

    async def one_client(http: httpx.AsyncClient) -> None:
        nonlocal ok, rejected
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await http.post(url, json=body, headers={"Prefer": "wait"}, timeout=120)
            if r.status_code in (200, 201) and r.json().get("status") == "succeeded":
                ok += 1
                latencies.append(time.perf_counter() - t0)
            else:
                rejected += 1

    start = time.monotonic()
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
    return Result("", clients, time.monotonic() - start, ok, rejected, latencies)


def ensure_cog() -> Path:
    python = COG_VENV / "bin" / "python"
    if not python.exists():
        print("installing cog into bench/.venv-cog ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(COG_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "cog", "pillow"], check=True)
    return python


def start_cog(python: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": "cog_predictor.py:Predictor",
        # Cog starts its Python worker as `python` from PATH: make that the Cog venv.
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        [str(python), "-m", "cog.server.http", "--host", "127.0.0.1"],
        cwd=ROOT / "bench", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health-check", timeout=1).json().get("status") == "READY":
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("cog server did not become ready")


def count_persisted(url: str) -> int:
    """Walk every page of GET /v1/predictions: what the store really holds."""
    total, next_url = 0, f"{url}/v1/predictions"
    while next_url:
        page = httpx.get(next_url, timeout=30).json()
        total += sum(1 for p in page["results"] if p["status"] == "succeeded")
        next_url = page.get("next")
    return total


def merge(parts: list[Result]) -> Result:
    return Result(
        parts[0].server,
        parts[0].clients,
        sum(p.seconds for p in parts),
        sum(p.ok for p in parts),
        sum(p.rejected for p in parts),
        [x for p in parts for x in p.latencies],
    )


def measure(targets: dict[str, tuple[str, dict[str, object]]], seconds: float) -> list[Result]:
    """Alternate short slices of each server at each concurrency.

    On a shared 2-core box the background load drifts; measuring one server after the other
    would hand that drift to one side. Interleaved slices give both the same conditions.
    """
    results: list[Result] = []
    for c in CONCURRENCY:
        slices: dict[str, list[Result]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, (url, body) in targets.items():
                r = asyncio.run(drive(url, body, c, seconds / ROUNDS))
                r.server = name
                slices[name].append(r)
        results += [merge(parts) for parts in slices.values()]
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    cog_proc, cog_url = start_cog(ensure_cog())
    server = start_server(Path(tempfile.mkdtemp(prefix="ds-bench-")), workers=args.workers)
    try:
        targets: dict[str, tuple[str, dict[str, object]]] = {
            "cog": (f"{cog_url}/predictions", {"input": {"prompt": "bench"}}),
            "dreamserve": (
                f"{server.url}/v1/models/bytedance/seedream-4/predictions",
                {"input": DS_INPUT},
            ),
        }
        results = measure(targets, args.seconds)
        persisted = count_persisted(server.url)
    finally:
        cog_proc.kill()
        stop_server(server)

    ds_ok = sum(r.ok for r in results if r.server == "dreamserve")
    lines = [
        f"`.venv/bin/python -m bench.service_throughput --seconds {args.seconds:g}` "
        f"(dreamserve with {args.workers} workers, SQLite store; Cog {cog_version()}; "
        "one 1024x1024 JPEG per prediction; `Prefer: wait`; 2-core CPU; both servers up at once, "
        f"measured in {ROUNDS} alternating slices each).",
        "",
        "| clients | server | ok/s | rejected | p50 ms | p99 ms | ok/s vs Cog |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        cog = next(r for r in results if r.server == "cog" and r.clients == c)
        for r in (cog, next(r for r in results if r.server == "dreamserve" and r.clients == c)):
            ratio = r.rate / cog.rate if cog.rate else float("inf")
            lines.append(
                f"| {c} | {r.server} | {r.rate:.1f} | {r.rejected} | {r.pct(0.5):.1f} | "
                f"{r.pct(0.99):.1f} | {ratio:.2f}x |"
            )
    lines += ["", f"Persisted: {persisted} of {ds_ok} successful dreamserve predictions found "
              "in the store afterwards."]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    write_section(ROOT / "BENCHMARKS.md", "Service throughput", text)
    return 0 if persisted >= ds_ok else 1


def cog_version() -> str:
    out = subprocess.run(
        [str(COG_VENV / "bin" / "python"), "-c", "import cog; print(cog.__version__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    raise SystemExit(main())
