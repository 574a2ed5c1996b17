#!/usr/bin/env python3
"""Login time with and without the second factor (issue 20), through the SSH
benchmark's russh driver (examples/ssh_load.rs, mode mfa-logins): one
metergate, users with the same ed25519 key, half of them with a confirmed
TOTP factor (codes from pyotp to confirm; the driver answers the login's
Code prompt). Each login is key exchange + key + (code) + exec `help`, one
at a time; runs alternate key-only and key+code; medians of the runs.

Each user logs in once per run: a code counts once, so every run has its
own users.

usage: cargo build --release --bin metergate --example ssh_load && python3 scripts/bench-mfa.py [--runs 3] [--users 30]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

import importlib.util

import pyotp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_ssh", os.path.join(ROOT, "scripts/bench-ssh.py"))
bs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bs)
bm = bs.bm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--users", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "id")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        proc, port, _, _ = bs.start_metergate(tmp, key)
        sock = os.path.join(tmp, "mg.sock")
        public = open(key + ".pub").read().strip()

        def mg(*args):
            return subprocess.run([bm.BIN, "--socket", sock, *args], check=True,
                                  capture_output=True, text=True).stdout

        try:
            plain, coded = [], []
            for r in range(a.runs):
                p_lines, c_lines = [], []
                for i in range(a.users):
                    for kind, lines in (("k", p_lines), ("m", c_lines)):
                        name = f"{kind}{r}x{i}"
                        mg("user", "add", name, "--email", f"{name}@example.org")
                        mg("user", "add-key", name, public)
                        if kind == "k":
                            lines.append(f"{name} -")
                            continue
                        secret = json.loads(mg("--json", "user", "mfa", "enroll", name))["secret"]
                        mg("user", "mfa", "confirm", name, pyotp.TOTP(secret).now())
                        lines.append(f"{name} {secret}")
                for lines, out in ((p_lines, plain), (c_lines, coded)):
                    path = os.path.join(tmp, "users")
                    open(path, "w").write("\n".join(lines) + "\n")
                    res = subprocess.run([bs.LOAD, "mfa-logins", str(port), "-", key, path],
                                         capture_output=True, text=True, check=True)
                    x = json.loads(res.stdout)
                    if x["errors"]:
                        raise SystemExit(f"login errors: {res.stderr}")
                    out.append(x)
                    print(f"run {r + 1}: {'key+code' if out is coded else 'key only'}: {x}", flush=True)
        finally:
            proc.terminate()
            proc.wait()
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    p, c = med(plain, "login_median_ms"), med(coded, "login_median_ms")
    pw, cw = med(plain, "median_ms"), med(coded, "median_ms")
    print(f"login: key only {p:.2} ms, key+code {c:.2} ms ({c / p:.2}x)")
    print(f"login + exec: key only {pw:.2} ms, key+code {cw:.2} ms ({cw / pw:.2}x)")


main()
