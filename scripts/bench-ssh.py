#!/usr/bin/env python3
"""The SSH benchmark (issue 6): metergate's SSH door against OpenSSH's sshd
(Debian's openssh-server) on loopback, driven by the same russh client
(examples/ssh_load.rs), alternated, medians of the runs:

- login (ed25519 key) + exec round trips per second, one and 8 clients at a
  time, and the median time of one; target: metergate's login time <= 1.5x
  sshd's;
- 200 concurrent interactive sessions (pty + shell): the server's memory
  (PSS of its whole process tree, so pages shared between sshd's per-session
  processes count once) and CPU (seconds to open them, and while they idle).

usage: cargo build --release --example ssh_load && python3 scripts/bench-ssh.py [--runs 5] [--count 200]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import importlib.util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_modbus", os.path.join(ROOT, "scripts/bench-modbus.py"))
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
LOAD = os.path.join(ROOT, "target/release/examples/ssh_load")
SSHD = "/usr/sbin/sshd"


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def proc_sum(pids, name, value):
    """The sum over pids of value(text of /proc/PID/name); gone processes count 0."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += value(f.read())
        except OSError:
            pass
    return total


def pss_kib(pids):
    return proc_sum(pids, "smaps_rollup",
                    lambda t: sum(int(l.split()[1]) for l in t.splitlines() if l.startswith("Pss:")))


def rss_kib(pids):
    return proc_sum(pids, "status",
                    lambda t: sum(int(l.split()[1]) for l in t.splitlines() if l.startswith("VmRSS:")))


def cpu_s(pids):
    # utime and stime, fields 14 and 15 of /proc/PID/stat
    return proc_sum(pids, "stat", lambda t: sum(int(x) for x in t.rsplit(")", 1)[1].split()[11:13])) / bm.TICK


def start_metergate(tmp, key, extra="", policy=None):
    sock = os.path.join(tmp, "mg.sock")
    port = bm.free_port()
    path = os.path.join(tmp, "mg.toml")
    open(path, "w").write(
        f'state_dir = "mg-state"\n[daemon]\nallow_root = true\n[control]\nsocket = "{sock}"\ngroup = ""\nmode = "0600"\n'
        f'{extra}\n[ssh]\nlisten = ["127.0.0.1:{port}"]\nmax_sessions_per_principal = 1000\n')
    p = subprocess.Popen([bm.BIN, "serve", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"})
    bm.wait_port(port)
    public = open(key + ".pub").read().strip()
    steps = [["user", "add", "bench", "--email", "bench@example.org"], ["user", "add-key", "bench", public]]
    if policy:
        steps.append(["user", "attach", "bench", policy])
    for args in steps:
        subprocess.run([bm.BIN, "--socket", sock, *args], check=True, stdout=subprocess.DEVNULL)
    return p, port, "bench", "help"


def start_sshd(tmp, key, extra=""):
    os.makedirs("/run/sshd", exist_ok=True)
    port = bm.free_port()
    host = os.path.join(tmp, "sshd_host_ed25519_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host], check=True)
    auth = os.path.join(tmp, "authorized_keys")
    shutil.copy(key + ".pub", auth)
    os.chmod(auth, 0o600)
    conf = os.path.join(tmp, "sshd_config")
    open(conf, "w").write(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\nStrictModes no\n"
        "UsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PidFile none\nLogLevel ERROR\nMaxStartups 1000\nMaxSessions 10\nPrintMotd no\nPrintLastLog no\n"
        "HostKeyAlgorithms ssh-ed25519\n" + extra)
    p = subprocess.Popen([SSHD, "-D", "-e", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bm.wait_port(port)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return p, port, user, "true"


def logins(server, key, count, clients):
    _, port, user, command = server
    out = subprocess.run([LOAD, "logins", str(port), user, key, str(count), str(clients), command],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if r["errors"]:
        raise SystemExit(f"login errors: {out.stderr}")
    return r


def hold(server, key, sessions, seconds):
    proc, port, user, _ = server
    before = cpu_s(tree(proc.pid))
    t0 = time.time()
    h = subprocess.Popen([LOAD, "hold", str(port), user, key, str(sessions), str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    line = h.stdout.readline()
    if not line.startswith("held"):
        raise SystemExit(f"hold failed: {line}")
    opened = time.time() - t0
    time.sleep(1)
    pids = tree(proc.pid)
    mid = cpu_s(pids)
    pss, rss = pss_kib(pids), rss_kib(pids)
    time.sleep(max(seconds - 3, 1))
    idle = cpu_s(tree(proc.pid)) - mid
    h.wait()
    return {"open_s": opened, "open_cpu_s": mid - before, "pss_mib": pss / 1024, "rss_mib": rss / 1024,
            "idle_cpu_s": idle,
            "processes": len(pids)}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--hold", type=int, default=8)
    a = ap.parse_args()
    for f in (bm.BIN, LOAD, SSHD):
        if not os.path.exists(f):
            raise SystemExit(f"missing {f}: cargo build --release --example ssh_load; apt-get install openssh-server")
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "client_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        servers = {"metergate": start_metergate(tmp, key), "sshd": start_sshd(tmp, key)}
        try:
            results = {name: {"1": [], "8": []} for name in servers}
            for run in range(a.runs):
                for clients in ("1", "8"):
                    for name, server in servers.items():
                        results[name][clients].append(logins(server, key, a.count, int(clients)))
            holds = {name: [] for name in servers}
            for run in range(min(a.runs, 3)):
                for name, server in servers.items():
                    holds[name].append(hold(server, key, a.sessions, a.hold))
        finally:
            for p, *_ in servers.values():
                p.terminate()
                p.wait()
    print(f"login (ed25519) + exec, {a.count} per run, medians of {a.runs} alternated runs:")
    rows = {}
    for name in servers:
        for clients in ("1", "8"):
            rs = results[name][clients]
            rows[(name, clients)] = (median([r["rate"] for r in rs]), median([r["median_ms"] for r in rs]),
                                     median([r["p90_ms"] for r in rs]), median([r["login_median_ms"] for r in rs]))
    for clients in ("1", "8"):
        for name in servers:
            rate, med, p90, login = rows[(name, clients)]
            print(f"  {name:9} {clients} client(s): {rate:7.1f}/s  round trip median {med:6.2f} ms, p90 {p90:6.2f} ms;"
                  f" login alone median {login:6.2f} ms")
        whole = rows[("metergate", clients)][1] / rows[("sshd", clients)][1]
        login = rows[("metergate", clients)][3] / rows[("sshd", clients)][3]
        print(f"  metergate/sshd at {clients} client(s): login time {login:.2f}x (target <= 1.5x), round trip {whole:.2f}x")
    print(f"{a.sessions} interactive sessions (pty + shell), medians of {len(holds['sshd'])} runs:")
    for name in servers:
        hs = holds[name]
        print(f"  {name:9} PSS {median([h['pss_mib'] for h in hs]):7.1f} MiB (RSS summed {median([h['rss_mib'] for h in hs]):7.1f} MiB)"
              f" in {median([h['processes'] for h in hs])} "
              f"process(es); CPU to open {median([h['open_cpu_s'] for h in hs]):5.2f} s; "
              f"CPU while idle {median([h['idle_cpu_s'] for h in hs]):5.2f} s over {max(a.hold - 3, 1)} s")


if __name__ == "__main__":
    main()
