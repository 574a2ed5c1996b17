#!/usr/bin/env python3
"""Prints the median of every criterion benchmark of the last run, with
throughput where the benchmark declares one (target/criterion/*/new)."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
for est in sorted(root.glob("**/new/estimates.json")):
    bench = est.parent.parent.relative_to(root)
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    line = f"{bench}: median {median_ns:,.0f} ns" if median_ns >= 10_000 else f"{bench}: median {median_ns:,.1f} ns"
    info = json.loads((est.parent / "benchmark.json").read_text())
    elements = (info.get("throughput") or {}).get("Elements")
    if elements:
        line += f", {elements / (median_ns / 1e9):,.0f} elements/s"
    print(line)
