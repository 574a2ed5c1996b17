#!/usr/bin/env python3
"""The web console benchmark (issue 17): time to first byte and to the whole
page of Users with 10k users and of Audit with 1M events, signed in as the
demo's admin, p50 and p90 over N loads (requests over one kept-alive TLS
connection; for each, the first page, a search or filter, and a page by its
cursor). Goal: under 100 ms.

usage: cargo build --release --bins --examples && python3 scripts/bench-console.py [--loads 50] [--users 10000] [--events 1000000]
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

import signal

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/metergate")
SEED = os.path.join(ROOT, "target/release/examples/seed_users")
SEED_EVENTS = os.path.join(ROOT, "target/release/examples/seed_events")


def start_demo(dir, base):
    p = subprocess.Popen([BIN, "demo", "--dir", dir, "--base-port", str(base)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    for line in p.stdout:
        if "metergate demo ready" in line:
            return p
    p.kill()
    sys.exit("the demo did not get ready")


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loads", type=int, default=50)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mg-bench-console-")
    demo = os.path.join(tmp, "demo")
    base = random.randrange(20000, 40000)
    stop(start_demo(demo, base))
    subprocess.run([SEED, os.path.join(demo, "state"), str(a.users)], check=True)
    t0 = time.perf_counter()
    subprocess.run([SEED_EVENTS, os.path.join(demo, "state"), str(a.events)], check=True)
    print(f"seeded in {time.perf_counter() - t0:.0f} s", flush=True)
    p = start_demo(demo, base)
    try:
        url = f"https://127.0.0.1:{base + 2941}"
        ca = os.path.join(demo, "certs", "ca.crt")
        creds = open(os.path.join(demo, "credentials.toml")).read()
        password = re.search(r'^admin = "([^"]+)"', creds, re.M).group(1)
        s = requests.Session()
        s.verify = ca
        # The system's trust store is not asked (REQUESTS_CA_BUNDLE would win).
        s.trust_env = False
        page = s.get(url + "/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = s.post(url + "/login", data={"csrf": csrf, "user": "admin", "password": password})
        if "Settings" not in r.text:
            sys.exit("the login did not work")
        first = s.get(url + "/users").text
        total = re.search(r"of (\d+) users", first).group(1)
        print(f"{total} users", flush=True)
        half = a.events // 2
        for name, path in (("Users, first page", "/users"),
                           ("Users, search u099", "/users?q=u099"),
                           ("Users, a page by its cursor", "/users?after=u09900"),
                           ("Audit, newest page", "/audit"),
                           ("Audit, filter code=write-registers.deny", "/audit?code=write-registers.deny"),
                           ("Audit, a page by its cursor", f"/audit?before={half}")):
            ttfb, full = [], []
            for _ in range(a.loads):
                t0 = time.perf_counter()
                r = s.get(url + path, stream=True)
                t1 = time.perf_counter()
                r.content
                t2 = time.perf_counter()
                if r.status_code != 200:
                    sys.exit(f"{path}: {r.status_code}")
                ttfb.append((t1 - t0) * 1000)
                full.append((t2 - t0) * 1000)
            q = lambda xs, f: sorted(xs)[int((len(xs) - 1) * f)]
            print(f"{name}: first byte p50 {statistics.median(ttfb):.1f} ms p90 {q(ttfb, .9):.1f} ms; "
                  f"whole page p50 {statistics.median(full):.1f} ms p90 {q(full, .9):.1f} ms", flush=True)
    finally:
        stop(p)


main()
