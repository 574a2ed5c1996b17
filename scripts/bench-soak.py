#!/usr/bin/env python3
"""The soak benchmark (issue 15): SCADA polls meters through the proxy while
each door (SSH, Modbus, mbaps) is flooded in turn by silent connections
from four loopback addresses that keep coming back (tests/peers/flood.py in
churn mode), alternated with runs without a flood. Reports the legitimate
polls' p50 and p99 with each flood against the runs without one (ratios),
and the daemon's descriptor count and RSS at their peak.

The gateway runs with its defaults (login_grace 60s, first request 10s,
64 connections per source, MaxStartups 10:30:100); the flood holds what the
caps let it hold and reconnects as fast as it is closed.

usage: python3 scripts/bench-soak.py [--runs 3] [--seconds 8] [--clients 32] [--interval 10]
  (release build first: cargo build --release --bins --examples)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import importlib.util

# The simulator, ports and CPU time as the Modbus benchmark has them.
_spec = importlib.util.spec_from_file_location(
    "bench_modbus", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-modbus.py"))
bench_modbus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_modbus)
ROOT, BIN, LOAD = bench_modbus.ROOT, bench_modbus.BIN, bench_modbus.LOAD
free_port, wait_port, profile = bench_modbus.free_port, bench_modbus.wait_port, bench_modbus.profile
start_sim, cpu_seconds = bench_modbus.start_sim, bench_modbus.cpu_seconds
FLOOD = os.path.join(ROOT, "tests/peers/flood.py")
SOURCES = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"


def start_gateway(tmp, sim_base, meters):
    sock = os.path.join(tmp, "c.sock")
    ports = {"modbus": free_port(), "mbaps": free_port(), "ssh": free_port()}
    for args in (["init-ca", "--ca", "ca"], ["server", "--ca", "ca", "--out", "tls"]):
        subprocess.run([BIN, "cert", *args], cwd=tmp, check=True, capture_output=True)
    cfg = [f'state_dir = "state"\n[daemon]\nallow_root = true\n[control]\nsocket = "{sock}"\ngroup = ""\nmode = "0600"\n', profile()]
    for i in range(meters):
        cfg.append(f'[[meters]]\nid = "m{i}"\nprofile = "ion-sim"\naddress = "127.0.0.1:{sim_base + i}"\ngateway_unit = {i + 1}\n')
    cfg.append(f'[modbus]\nlisten = ["127.0.0.1:{ports["modbus"]}"]\n')
    # Every loopback address is a client: the flood must meet the
    # first-request deadline, not the address check.
    cfg.append('[[modbus.clients]]\ncidr = "127.0.0.0/8"\nservice_user = "scada"\n')
    cfg.append(f'[mbaps]\nlisten = ["127.0.0.1:{ports["mbaps"]}"]\ncertificate = "tls/server.crt"\nkey = "tls/server.key"\n')
    cfg.append(f'[ssh]\nlisten = ["127.0.0.1:{ports["ssh"]}"]\n')
    path = os.path.join(tmp, "soak.toml")
    open(path, "w").write("\n".join(cfg))
    p = subprocess.Popen([BIN, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"})
    for port in ports.values():
        wait_port(port)
    for args in (["service-user", "add", "scada"], ["service-user", "attach", "scada", "ReadOnly"]):
        subprocess.run([BIN, "--socket", sock, *args], check=True, stdout=subprocess.DEVNULL)
    return p, ports


class Peak:
    """Samples the daemon's descriptors and RSS every 100 ms."""

    def __init__(self, pid):
        self.pid, self.fds, self.rss_kib = pid, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.rss_kib = max(self.rss_kib, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def poll(port, meters, clients, seconds, interval):
    cmd = [LOAD, "--clients", str(clients), "--seconds", str(seconds), "--target", f"127.0.0.1:{port}",
           "--units", f"1-{meters}", "--interval", str(interval)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    r = json.loads(out.stdout)
    if r["errors"]:
        sys.exit(f"legitimate polls failed under the flood: {out.stderr}")
    return r


def phase(door, ports, gateway, a):
    flood = None
    if door != "none":
        flood = subprocess.Popen(["python3", FLOOD, "127.0.0.1", str(ports[door]), SOURCES, "600",
                                  str(a.seconds + 2), "churn"], stdout=subprocess.PIPE, text=True)
        json.loads(flood.stdout.readline())
        time.sleep(1)
    cpu_before = cpu_seconds(gateway.pid)
    flood_before = cpu_seconds(flood.pid) if flood else 0.0
    started = time.monotonic()
    with Peak(gateway.pid) as peak:
        r = poll(ports["modbus"], a.meters, a.clients, a.seconds, a.interval)
    elapsed = time.monotonic() - started
    r["cpu"] = (cpu_seconds(gateway.pid) - cpu_before) / elapsed
    r["flood_cpu"] = (cpu_seconds(flood.pid) - flood_before) / elapsed if flood else 0.0
    if flood:
        done = json.loads(flood.stdout.readline())
        flood.wait()
        r["flood_opened"] = done["opened"]
    r["fds"], r["rss_mib"] = peak.fds, peak.rss_kib / 1024
    # The flood's sockets are gone; let the daemon see them close.
    time.sleep(1)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--interval", type=int, default=10, help="ms between two polls of one client")
    ap.add_argument("--meters", type=int, default=4)
    a = ap.parse_args()
    for f in (BIN, LOAD):
        if not os.path.exists(f):
            sys.exit(f"{f} is missing: cargo build --release --bins --examples")
    with tempfile.TemporaryDirectory() as tmp:
        sim_base = free_port()
        sim = start_sim(a.meters, sim_base)
        gateway, ports = start_gateway(tmp, sim_base, a.meters)
        results = {d: [] for d in ("none", "ssh", "modbus", "mbaps")}
        try:
            for _ in range(a.runs):
                for door in ("ssh", "modbus", "mbaps"):
                    results["none"].append(phase("none", ports, gateway, a))
                    results[door].append(phase(door, ports, gateway, a))
        finally:
            gateway.terminate()
            gateway.wait()
            sim.terminate()
    base = {k: statistics.median(r[k] for r in results["none"]) for k in ("p50_us", "p99_us", "rps")}
    print(f"# soak: {a.clients} SCADA clients polling every {a.interval} ms over {a.meters} meters, "
          f"{a.runs} alternated runs of {a.seconds:g} s per door, medians\n")
    print("| flood on | polls/s | p50 µs | p99 µs | p50 ratio | p99 ratio | flood connections/s | gateway CPU | flood CPU | peak fds | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for door, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        opened = "-" if door == "none" else f"{med('flood_opened') / (a.seconds + 2):,.0f}"
        print(f"| {door} | {med('rps'):,.0f} | {med('p50_us'):,.0f} | {med('p99_us'):,.0f} | "
              f"{med('p50_us') / base['p50_us']:.2f} | {med('p99_us') / base['p99_us']:.2f} | {opened} | "
              f"{med('cpu') * 100:.0f} % | {med('flood_cpu') * 100:.0f} % | "
              f"{max(r['fds'] for r in rs)} | {max(r['rss_mib'] for r in rs):.1f} |")


if __name__ == "__main__":
    main()
