#!/usr/bin/env python3
"""The API benchmark (issue 16), side by side in one run against the demo:
GET one user and POST check through the HTTPS API with a cached token,
against the same commands through the control socket as the CLI sends
them; 1 and 16 clients in a closed loop, alternated runs, medians. Then
token issuance per second, and a flood of
wrong secrets for the key (16 clients from 127.0.0.2) while the right
secret asks for a token every 100 ms from 127.0.0.1.

The demo runs with api.requests_per_second raised so that the per-token
rate limit (50 by default) is not what is measured.

usage: python3 scripts/bench-api.py [--runs 3] [--seconds 5]
  (release build first: cargo build --release --bins --examples)
"""
import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/metergate")
LOAD = os.path.join(ROOT, "target/release/examples/api_load")


def start_demo(dir, base):
    p = subprocess.Popen([BIN, "demo", "--dir", dir, "--base-port", str(base)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.time() + 60
    for line in p.stdout:
        if "metergate demo ready" in line:
            return p
        if time.time() > deadline:
            break
    p.kill()
    sys.exit("the demo did not get ready")


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()


def load(env, *args):
    out = subprocess.run([LOAD, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        sys.exit(f"api_load {' '.join(map(str, args))}: {out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args()
    for f in (BIN, LOAD):
        if not os.path.exists(f):
            sys.exit(f"{f} is missing: cargo build --release --bins --examples")
    tmp = tempfile.mkdtemp(prefix="mg-bench-api-")
    demo = os.path.join(tmp, "demo")
    base = random.randrange(20000, 40000)
    p = start_demo(demo, base)
    stop(p)
    cfg = os.path.join(demo, "metergate.toml")
    text = open(cfg).read()
    text = re.sub(r"(?m)^\[api\]\n", "[api]\nrequests_per_second = 1000000\n", text, count=1)
    open(cfg, "w").write(text)
    p = start_demo(demo, base)
    try:
        creds = open(os.path.join(demo, "credentials.toml")).read()
        key = re.search(r'\[access_keys\.provisioner\]\nid = "([^"]+)"\nsecret = "([^"]+)"', creds)
        env = {**os.environ, "METERGATE_KEY_ID": key.group(1), "METERGATE_KEY_SECRET": key.group(2)}
        common = ["--url", f"https://127.0.0.1:{base + 2941}", "--cacert", os.path.join(demo, "certs/ca.crt"),
                  "--socket", os.path.join(demo, "control.sock"), "--seconds", a.seconds]
        print(f"# API vs control socket: {a.runs} alternated runs of {a.seconds}s each, medians")
        print(f"{'op':6} {'clients':>7} {'door':7} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8}")
        for clients in (1, 16):
            for op in ("user", "check"):
                got = {"socket": [], "api": []}
                for _ in range(a.runs):
                    for door in ("socket", "api"):
                        got[door].append(load(env, "--door", door, "--op", op, "--clients", clients, *common))
                med = {}
                for door, runs in got.items():
                    med[door] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_us", "p99_us")}
                    m = med[door]
                    print(f"{op:6} {clients:>7} {door:7} {m['rps']:>9.0f} {m['p50_us']:>8.0f} {m['p99_us']:>8.0f}")
                r = med["api"]["rps"] / med["socket"]["rps"]
                print(f"{op:6} {clients:>7} ratio   api/socket throughput {r:.2f}, p50 {med['api']['p50_us'] / med['socket']['p50_us']:.2f}")
        print("# token issuance (a keyed check of the secret, two durable events a token)")
        for clients in (1, 4):
            t = load(env, "--door", "api", "--op", "token", "--clients", clients, *common)
            print(f"token  {clients:>7} api     {t['rps']:>9.1f} {t['p50_us']:>8} {t['p99_us']:>8}  statuses {t['statuses']}")
        print("# a flood of wrong secrets (16 clients from 127.0.0.2) while the right one asks every 100 ms")
        f = load(env, "--op", "flood", "--clients", 16, *common)
        print(f"right secret: {f['requests']} asks, statuses {f['statuses']}, p50 {f['p50_us']} µs, "
              f"p99 {f['p99_us']} µs, max {f['max_us']} µs; wrong secrets answered: {f['wrong_secrets_sent']}")
    finally:
        stop(p)


main()
