#!/usr/bin/env python3
"""The Modbus/TCP Security benchmark (issue 5): one gateway with a plain
listener and an mbaps listener on the same 16 simulated meters (simulator out
of process). Alternated runs (plain, TLS, plain, ...), medians:

- request throughput on long-lived connections, FC 3 reads of 10 registers,
  at 1, 16 and 64 clients: TLS vs plain (target >= 0.8x);
- connection rate with one read per connection at 16 clients: plain TCP,
  TLS full handshakes, TLS resumed handshakes.

usage: python3 scripts/bench-mbaps.py [--runs 5] [--seconds 3]
"""
import argparse
import importlib.util
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_modbus", os.path.join(ROOT, "scripts/bench-modbus.py"))
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)


def start_gateway(tmp, base, meters):
    """Plain and TLS listeners over the same unit map; returns (proc, plain, tls, client files)."""
    ca, tls_dir, client_dir = (os.path.join(tmp, d) for d in ("ca", "tls", "client"))
    for args in (["init-ca", "--ca", ca], ["server", "--ca", ca, "--out", tls_dir],
                 ["issue", "--ca", ca, "--service-user", "bench", "--role", "Viewer", "--out", client_dir]):
        subprocess.run([bm.BIN, "cert", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(tmp, "c.sock")
    plain, tls = bm.free_port(), bm.free_port()
    cfg = [f'state_dir = "state"\n[daemon]\nallow_root = true\n[control]\nsocket = "{sock}"\ngroup = ""\nmode = "0600"\n', bm.profile()]
    for k in range(meters):
        cfg.append(f'[[meters]]\nid = "m{k}"\nprofile = "ion-sim"\naddress = "127.0.0.1:{base + k}"\ngateway_unit = {k + 1}\nmax_connections = 8\npipeline = 8\n')
    cfg.append(f'[modbus]\nlisten = ["127.0.0.1:{plain}"]\nmax_queue = 4096\n[[modbus.clients]]\ncidr = "127.0.0.0/8"\nservice_user = "bench"\n')
    cfg.append(f'[mbaps]\nlisten = ["127.0.0.1:{tls}"]\ncertificate = "tls/server.crt"\nkey = "tls/server.key"\ncrl = "ca/crl.pem"\n')
    path = os.path.join(tmp, "m.toml")
    open(path, "w").write("\n".join(cfg))
    p = subprocess.Popen([bm.BIN, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"})
    bm.wait_port(plain)
    bm.wait_port(tls)
    for args in (["service-user", "add", "bench"], ["service-user", "attach", "bench", "ReadOnly"]):
        subprocess.run([bm.BIN, "--socket", sock, *args], check=True, stdout=subprocess.DEVNULL)
    files = ["--tls-ca", os.path.join(tls_dir, "ca.crt"), "--tls-cert", os.path.join(client_dir, "bench.crt"),
             "--tls-key", os.path.join(client_dir, "bench.key")]
    return p, plain, tls, files


def load(port, clients, seconds, extra=()):
    import json
    cmd = [bm.LOAD, "--clients", str(clients), "--seconds", str(seconds), "--target", f"127.0.0.1:{port}",
           "--units", "1-16", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["errors"]:
        raise SystemExit(f"load errors: {out.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "metergate", "--example", "modbus_load"],
                   cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp()
    base = bm.free_block(16)
    sim = bm.start_sim(16, base)
    gw, plain, tls, files = start_gateway(tmp, base, 16)
    print(f"# plain Modbus/TCP vs Modbus/TCP Security, same gateway and meters, {a.runs} alternated runs of {a.seconds}s, medians\n")
    print("| clients | plain req/s | TLS req/s | TLS/plain | plain p50/p99 µs | TLS p50/p99 µs |")
    print("|---|---|---|---|---|---|")
    for n in (1, 16, 64):
        p_runs, t_runs = [], []
        for _ in range(a.runs):
            p_runs.append(load(plain, n, a.seconds))
            t_runs.append(load(tls, n, a.seconds, files))
        pr, tr = bm.med(p_runs, "rps"), bm.med(t_runs, "rps")
        print(f"| {n} | {pr:,.0f} | {tr:,.0f} | {tr / pr:.2f} | {bm.med(p_runs, 'p50_us'):.0f}/{bm.med(p_runs, 'p99_us'):.0f} | "
              f"{bm.med(t_runs, 'p50_us'):.0f}/{bm.med(t_runs, 'p99_us'):.0f} |", flush=True)
    print(f"\n# new connection per read (connect, handshake, one read, close), 16 clients, {a.runs} alternated runs\n")
    print("| connection | per second | p50/p99 µs | vs plain |")
    print("|---|---|---|---|")
    kinds = [("plain TCP", plain, []), ("TLS full handshake", tls, files), ("TLS resumed", tls, files + ["--resume"])]
    runs = {k: [] for k, _, _ in kinds}
    for _ in range(a.runs):
        for k, port, extra in kinds:
            runs[k].append(load(port, 16, a.seconds, ["--handshakes", *extra]))
    base_rate = bm.med(runs["plain TCP"], "rps")
    for k, _, _ in kinds:
        r = bm.med(runs[k], "rps")
        print(f"| {k} | {r:,.0f} | {bm.med(runs[k], 'p50_us'):.0f}/{bm.med(runs[k], 'p99_us'):.0f} | {r / base_rate:.2f} |")
    gw.terminate()
    gw.wait()
    sim.terminate()
    sim.wait()


if __name__ == "__main__":
    main()
