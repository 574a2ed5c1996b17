#!/usr/bin/env python3
"""The Modbus proxy benchmark (issue 4): simulator out of process, 16 meters,
FC 3 reads of 10 registers from 1/16/64/256 clients, directly to the
simulator and through the proxy, alternated (direct, proxy, direct, ...),
medians of N runs each: req/s, p50, p99, and CPU time per request of the
simulator and of the proxy (from /proc). Then modbus-proxy (PyPI) against our
proxy on a one-meter topology (our pool: 4 connections), and the proxy's RSS
with 1k client connections and 1k configured meters.

usage: python3 scripts/bench-modbus.py [--runs 5] [--seconds 3]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/metergate")
LOAD = os.path.join(ROOT, "target/release/examples/modbus_load")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_block(n):
    for _ in range(100):
        p = free_port()
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", p + k))
                socks.append(s)
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit("no free port block")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start_sim(meters, base, extra=()):
    p = subprocess.Popen([BIN, "simulate", "--meters", str(meters), "--base-port", str(base), "--max-connections", "2000", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if "metergate simulate ready" in line:
            return p
    sys.exit("simulator did not start")


def profile():
    text = open(os.path.join(ROOT, "config/metergate.toml")).read()
    return "# --- profile ion-sim" + text.split("# --- profile ion-sim", 1)[1].split("# --- end profile ---", 1)[0]


def start_proxy(tmp, meters, listeners, pool, pipeline=1):
    """meters: list of (address, listener index, gateway unit)."""
    sock = os.path.join(tmp, "c.sock")
    ports = [free_port() for _ in range(listeners)]
    cfg = [f'state_dir = "state"\n[daemon]\nallow_root = true\n[control]\nsocket = "{sock}"\ngroup = ""\nmode = "0600"\n', profile()]
    for i, (addr, l, unit) in enumerate(meters):
        cfg.append(f'[[meters]]\nid = "m{i}"\nprofile = "ion-sim"\naddress = "{addr}"\ngateway_unit = {unit}\nlistener = "127.0.0.1:{ports[l]}"\nmax_connections = {pool}\npipeline = {pipeline}\n')
    cfg.append("[modbus]\nlisten = [" + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + "]\nmax_queue = 4096\n")
    cfg.append('[[modbus.clients]]\ncidr = "127.0.0.0/8"\nservice_user = "bench"\n')
    path = os.path.join(tmp, "m.toml")
    open(path, "w").write("\n".join(cfg))
    p = subprocess.Popen([BIN, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"})
    for port in ports:
        wait_port(port)
    for args in (["service-user", "add", "bench"], ["service-user", "attach", "bench", "ReadOnly"]):
        subprocess.run([BIN, "--socket", sock, *args], check=True, stdout=subprocess.DEVNULL)
    return p, ports


def load(clients, seconds, target=None, units=None, targets=None):
    cmd = [LOAD, "--clients", str(clients), "--seconds", str(seconds)]
    cmd += ["--target", target, "--units", units] if target else ["--targets", targets]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["errors"]:
        sys.exit(f"load errors: {out.stderr}")
    return r


def measure(pids, **kw):
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    r = load(**kw)
    for k, p in pids.items():
        r[f"{k}_cpu_us"] = (cpu_seconds(p) - before[k]) * 1e6 / max(r["requests"], 1)
    return r


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--clients", default="1,16,64,256")
    ap.add_argument("--pipeline", type=int, default=8, help="requests in flight per meter connection (our `pipeline`)")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "metergate", "--example", "modbus_load"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp()
    base = free_block(16)
    sim = start_sim(16, base)
    proxy, ports = start_proxy(tmp, [(f"127.0.0.1:{base + k}", 0, k + 1) for k in range(16)], 1, 8, a.pipeline)
    direct = ",".join(f"127.0.0.1:{base + k}" for k in range(16))
    print(f"# direct vs proxy: 16 meters, FC3 x10 registers, {a.runs} alternated runs of {a.seconds}s, medians\n")
    print("| clients | direct req/s | proxy req/s | ratio | direct p50/p99 µs | proxy p50/p99 µs | added p50 µs | sim CPU/req µs | proxy CPU/req µs | proxy/sim CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in [int(c) for c in a.clients.split(",")]:
        d_runs, p_runs = [], []
        for _ in range(a.runs):
            d_runs.append(measure({"sim": sim.pid}, clients=n, seconds=a.seconds, targets=direct))
            p_runs.append(measure({"sim": sim.pid, "proxy": proxy.pid}, clients=n, seconds=a.seconds, target=f"127.0.0.1:{ports[0]}", units="1-16"))
        dr, pr = med(d_runs, "rps"), med(p_runs, "rps")
        sim_cpu = med(d_runs, "sim_cpu_us")
        prox_cpu = med(p_runs, "proxy_cpu_us")
        print(f"| {n} | {dr:,.0f} | {pr:,.0f} | {pr / dr:.2f} | {med(d_runs, 'p50_us'):.0f}/{med(d_runs, 'p99_us'):.0f} | "
              f"{med(p_runs, 'p50_us'):.0f}/{med(p_runs, 'p99_us'):.0f} | {med(p_runs, 'p50_us') - med(d_runs, 'p50_us'):.0f} | "
              f"{sim_cpu:.1f} | {prox_cpu:.1f} | {prox_cpu / sim_cpu:.2f} |", flush=True)
    proxy.terminate()
    proxy.wait()

    # modbus-proxy (PyPI) vs ours, one meter; our pool at 4 connections.
    if shutil.which("modbus-proxy"):
        one = f"127.0.0.1:{base}"
        t2 = tempfile.mkdtemp()
        ours, oports = start_proxy(t2, [(one, 0, 1)], 1, 4, a.pipeline)
        theirs_port = free_port()
        theirs = subprocess.Popen(["modbus-proxy", "-b", f"tcp://127.0.0.1:{theirs_port}", "--modbus", f"tcp://{one}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(theirs_port)
        print(f"\n# one meter, 64 clients, {a.runs} alternated runs: ours (4 connections, pipeline {a.pipeline}) vs modbus-proxy\n")
        o_runs, t_runs = [], []
        for _ in range(a.runs):
            o_runs.append(load(clients=64, seconds=a.seconds, target=f"127.0.0.1:{oports[0]}", units="1-1"))
            t_runs.append(load(clients=64, seconds=a.seconds, target=f"127.0.0.1:{theirs_port}", units="1-1"))
        o, t = med(o_runs, "rps"), med(t_runs, "rps")
        print(f"| proxy | req/s | p50/p99 µs |\n|---|---|---|\n| metergate | {o:,.0f} | {med(o_runs, 'p50_us'):.0f}/{med(o_runs, 'p99_us'):.0f} |")
        print(f"| modbus-proxy | {t:,.0f} | {med(t_runs, 'p50_us'):.0f}/{med(t_runs, 'p99_us'):.0f} |\n\nratio: {o / t:.1f}x")
        theirs.terminate()
        ours.terminate()
        ours.wait()
    else:
        print("\nmodbus-proxy is not installed (pip install 'modbus-proxy>=0.8,<0.9'): comparison skipped")

    # RSS: 1k configured meters (5 listeners x 200 units) and 1k client connections.
    t3 = tempfile.mkdtemp()
    meters = [(f"127.0.0.1:{base + (i % 16)}", i // 200, i % 200 + 1) for i in range(1000)]
    big, bports = start_proxy(t3, meters, 5, 1)
    idle = rss_kib(big.pid)
    conns = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", bports[i % 5]))
        unit = i % 200 + 1
        s.sendall(bytes([0, 1, 0, 0, 0, 6, unit, 3, 0x0b, 0xb8, 0, 10]))
        conns.append(s)
    for s in conns:
        s.recv(64)
    print(f"\n# proxy RSS: {idle / 1024:.1f} MiB with 1k meters configured, {rss_kib(big.pid) / 1024:.1f} MiB with 1k client connections each having read once")
    for s in conns:
        s.close()
    big.terminate()
    big.wait()
    sim.terminate()
    sim.wait()


if __name__ == "__main__":
    main()
