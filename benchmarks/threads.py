"""How the torch thread count behaves on this machine as it is now: a CPU-light probe of many small
matrix products (the shape of a ShapeWorld decoding step: 16 rows x 256 hidden), timed at each thread
count in turn, wall time and process CPU time per 100 products.

    python -m benchmarks.threads --threads 1 2 --seconds 3

On an idle machine 2 threads are faster; when other processes keep the cores busy, every parallel
region waits for its slowest thread, and the CPU time per product grows as the wall time does
(results: docs/performance.md, "Threads").
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def probe(threads: int, seconds: float) -> tuple[float, float]:
    """(wall, CPU) seconds per 100 products of (16, 256) x (256, 1024) at ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(16, 256), torch.randn(256, 1024)
    for _ in range(50):
        a @ b  # warm up the thread pool
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for _ in range(100):
            a @ b
        n += 1
    return (time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the thread counts this many times")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for r in range(args.rounds):
        for t in args.threads:
            wall, cpu = probe(t, args.seconds)
            print(f"round {r}  threads {t}: {1e3 * wall:7.2f} ms wall, {1e3 * cpu:7.2f} ms CPU per 100 products")


if __name__ == "__main__":
    main()
