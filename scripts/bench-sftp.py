#!/usr/bin/env python3
"""The SFTP benchmark (issue 7): download and upload of one large file
through metergate's SFTP door and through OpenSSH's sshd with internal-sftp
(Debian's openssh-server), both on loopback, driven by OpenSSH's own `sftp`
client (64 requests of 32 KiB in flight), alternated, medians of the runs.
Target: metergate >= 0.6x sshd's throughput.

usage: cargo build --release --bin metergate && python3 scripts/bench-sftp.py [--runs 3] [--mib 256]
"""
import argparse
import importlib.util
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_ssh", os.path.join(ROOT, "scripts/bench-ssh.py"))
bs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bs)

OPTIONS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]


def transfer(port, user, key, command):
    t0 = time.time()
    subprocess.run(["sftp", *OPTIONS, "-i", key, "-P", str(port), "-b", "-", f"{user}@127.0.0.1"],
                   input=command + "\n", text=True, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "client_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        files = os.path.join(tmp, "files")
        os.makedirs(os.path.join(files, "m1"))
        big = os.path.join(tmp, "big.bin")
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(a.mib):
                f.write(chunk)
        for where in (os.path.join(files, "m1", "big.bin"), os.path.join(files, "sshd-big.bin")):
            subprocess.run(["cp", big, where], check=True)
        profile = bs.bm.profile()
        mg = bs.start_metergate(tmp, key, extra=f'{profile}\n[[meters]]\nid = "m1"\nprofile = "ion-sim"\nfiles = "{files}/m1"\n',
                                policy="Administrator")
        sshd = bs.start_sshd(tmp, key, extra="Subsystem sftp internal-sftp\n")
        servers = {
            "metergate": (mg, "/m1/big.bin", "/m1/up.bin"),
            "sshd": (sshd, os.path.join(files, "sshd-big.bin"), os.path.join(files, "sshd-up.bin")),
        }
        got = os.path.join(tmp, "got.bin")
        times = {name: {"download": [], "upload": []} for name in servers}
        try:
            for _ in range(a.runs):
                for name, ((proc, port, user, _), remote, up) in servers.items():
                    times[name]["download"].append(transfer(port, user, key, f"get {remote} {got}"))
                    os.remove(got)
                    times[name]["upload"].append(transfer(port, user, key, f"put {big} {up}"))
        finally:
            for (p, *_), _, _ in servers.values():
                p.terminate()
                p.wait()
    print(f"{a.mib} MiB through OpenSSH's sftp client, medians of {a.runs} alternated runs:")
    rate = {}
    for name in servers:
        for what in ("download", "upload"):
            rate[(name, what)] = a.mib / bs.median(times[name][what])
    for what in ("download", "upload"):
        m, o = rate[("metergate", what)], rate[("sshd", what)]
        print(f"  {what:8}: metergate {m:7.1f} MiB/s, sshd internal-sftp {o:7.1f} MiB/s: {m / o:.2f}x (target >= 0.6x)")


if __name__ == "__main__":
    main()
