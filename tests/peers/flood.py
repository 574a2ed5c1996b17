#!/usr/bin/env python3
"""Silent connections, as an attacker opens them: many TCP connections from
several loopback sources that never say a word. Prints one line once they
are all opened (or refused), then waits until the server has closed every
one of them or `hold` seconds passed, and prints a JSON summary.

usage: flood.py HOST PORT SOURCES PER_SOURCE HOLD [churn|banner]
  SOURCES: comma-separated loopback addresses to connect from
  churn:   every connection the server closes is opened again at once, for
           HOLD seconds (a flood that keeps coming, for the soak benchmark)
  banner:  each connection says an SSH version line and then nothing (a
           client that stalls the key exchange)
"""
import errno
import json
import resource
import selectors
import socket
import sys
import time


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    sources = sys.argv[3].split(",")
    per_source, hold = int(sys.argv[4]), float(sys.argv[5])
    mode = sys.argv[6] if len(sys.argv) > 6 else ""
    churn, banner = mode == "churn", mode == "banner"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = len(sources) * per_source + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    sel = selectors.DefaultSelector()
    opened = refused = 0

    def open_one(src):
        nonlocal opened, refused
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        if banner:
            s.settimeout(10)
            try:
                s.connect((host, port))
                s.sendall(b"SSH-2.0-stalling_client\r\n")
            except OSError:
                refused += 1
                s.close()
                return
        s.setblocking(False)
        rc = 0 if banner else s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            refused += 1
            s.close()
            return
        opened += 1
        sel.register(s, selectors.EVENT_READ, (time.monotonic(), src))

    for src in sources:
        for _ in range(per_source):
            open_one(src)
    print(json.dumps({"phase": "opened", "opened": opened, "refused": refused}), flush=True)
    closed, bytes_seen, started = 0, 0, time.monotonic()
    closed_after = []
    while sel.get_map() and time.monotonic() - started < hold:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (ConnectionResetError, ConnectionRefusedError, OSError):
                data = b""
            if data:
                # A banner or a TLS alert: read and say nothing back.
                bytes_seen += len(data)
                continue
            sel.unregister(s)
            s.close()
            closed += 1
            closed_after.append(time.monotonic() - key.data[0])
            if churn:
                open_one(key.data[1])
    still_open = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    closed_after.sort()
    print(json.dumps({
        "phase": "done",
        "opened": opened,
        "closed_by_server": closed,
        "still_open": still_open,
        "slowest_close_s": round(closed_after[-1], 2) if closed_after else None,
    }), flush=True)


if __name__ == "__main__":
    main()
