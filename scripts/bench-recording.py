#!/usr/bin/env python3
"""Session recording's cost (issue 18): console pass-through on the demo
(`connect meter-1` to its simulated meter console) with recording on and
off, alternated in one run, driven by the SSH benchmark's russh client
(examples/ssh_load.rs, mode console):

- throughput: `cat BYTES` through the console, to its prompt (MiB/s);
- keystroke echo latency p50/p99: a key sent to its echo from the meter;
- the daemon's CPU per MiB passed through (on and off; the difference is
  what recording costs);
- disk per hour of a typical interactive session: commands typed key by
  key (`status`, one every 10 s), the recording's size scaled to an hour.

usage: cargo build --release --bins --example ssh_load && python3 scripts/bench-recording.py [--runs 3] [--mib 32] [--echoes 200]
"""
import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/metergate")
LOAD = os.path.join(ROOT, "target/release/examples/ssh_load")
TICK = os.sysconf("SC_CLK_TCK")


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def base_port():
    for _ in range(200):
        b = random.randrange(14000, 40000)
        if all(free(p) for p in (b, b - 3280, b + 2941, b + 1, b + 2, b + 3)):
            return b
    raise SystemExit("no free ports")


def cpu(pid):
    """The process's user + system CPU seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--echoes", type=int, default=200)
    ap.add_argument("--typical", type=int, default=60)
    a = ap.parse_args()
    for f in (BIN, LOAD):
        if not os.path.exists(f):
            raise SystemExit(f"{f} is missing: cargo build --release --bins --example ssh_load")
    with tempfile.TemporaryDirectory() as tmp:
        demo = os.path.join(tmp, "demo")
        base = base_port()
        proc = subprocess.Popen([BIN, "demo", "--base-port", str(base), "--dir", demo],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:
            if "metergate demo ready" in line:
                break
        sock = os.path.join(demo, "control.sock")
        config = os.path.join(demo, "metergate.toml")
        original = open(config).read()

        def mg(*args):
            return subprocess.run([BIN, "--socket", sock, *args], check=True,
                                  capture_output=True, text=True).stdout

        def reloads():
            return mg("audit", "query", "--code", "system.reload", "--limit", "1000").count("system.reload ")

        def recording(on):
            before = reloads()
            open(config, "w").write(original if on else original + "\n[recording]\nenabled = false\n")
            proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 20
            while reloads() == before:
                if time.time() > deadline:
                    raise SystemExit("the reload did not happen")
                time.sleep(0.1)

        key = os.path.join(tmp, "id")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        mg("user", "add-key", "crew", open(key + ".pub").read().strip())
        port = str(base - 3280)

        def console(nbytes, echoes, typical):
            r = subprocess.run([LOAD, "console", port, "crew", key, "meter-1", str(nbytes), str(echoes), str(typical)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"ssh_load: {r.stderr}")
            return json.loads(r.stdout)

        results = {True: [], False: []}
        try:
            console(1024 * 1024, 10, 0)  # warm up: the meter's console link
            for r in range(a.runs):
                for on in ((True, False) if r % 2 == 0 else (False, True)):
                    recording(on)
                    c0 = cpu(proc.pid)
                    t = console(a.mib * 1024 * 1024, 0, 0)
                    cpu_s = cpu(proc.pid) - c0
                    e = console(0, a.echoes, 0)
                    x = {"mib_s": t["cat_mib_s"], "cpu_s_per_mib": cpu_s / a.mib,
                         "echo_p50_ms": e["echo_p50_ms"], "echo_p99_ms": e["echo_p99_ms"]}
                    results[on].append(x)
                    print(f"run {r + 1}, recording {'on' if on else 'off'}: {x}", flush=True)
            recording(True)
            console(0, 0, a.typical)
            recs = json.loads(mg("--json", "session", "recordings"))
            typical = recs[-1]["bytes"]
        finally:
            proc.terminate()
            proc.wait()
    med = lambda on, k: statistics.median(x[k] for x in results[on])
    on_t, off_t = med(True, "mib_s"), med(False, "mib_s")
    print(f"console throughput: recording on {on_t:.1f} MiB/s, off {off_t:.1f} MiB/s ({on_t / off_t:.2f}x)")
    for k in ("echo_p50_ms", "echo_p99_ms"):
        print(f"echo {k[5:8]}: on {med(True, k):.3f} ms, off {med(False, k):.3f} ms "
              f"(+{med(True, k) - med(False, k):.3f} ms)")
    on_c, off_c = med(True, "cpu_s_per_mib"), med(False, "cpu_s_per_mib")
    print(f"daemon CPU per MiB through the console: on {on_c * 1000:.1f} ms, off {off_c * 1000:.1f} ms "
          f"(recording adds {(on_c - off_c) * 1000:.1f} ms per MiB)")
    per_hour = typical / a.typical * 360
    print(f"typical session ({a.typical} commands typed key by key): {typical} bytes recorded, "
          f"{per_hour / 1024:.0f} KiB per hour at one command every 10 s")


main()
