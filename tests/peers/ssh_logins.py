#!/usr/bin/env python3
"""Many SSH password logins at once with paramiko (a client nobody here
wrote), each from its own loopback source address; prints one JSON list.

usage: ssh_logins.py PORT THREADS SPEC
  SPEC is JSON: [{"source": "127.0.0.2", "user": "...", "password": "...",
                  "command": "whoami" (optional)}, ...]
  THREADS attempts run at a time.
result: [{"ok": true, "stdout": "..."}
         | {"ok": false, "error": "...", "disconnect": "the server's words"}]
  `disconnect` is the text of an SSH disconnect the server sent (paramiko
  logs it; after a failure the script waits up to 3 s for one), so a test
  can tell "busy, try again" from a plain refusal.
"""
import json
import logging
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


class Disconnects(logging.Handler):
    """paramiko logs a server's disconnect message in the transport's own
    thread, on the transport's log channel: keep it per channel."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.text = {}
        self.mutex = threading.Lock()

    def emit(self, record):
        msg = record.getMessage()
        if "isconnect" in msg:
            with self.mutex:
                self.text[record.name] = self.text.get(record.name, "") + msg


def attempt(port, i, spec, disconnects):
    channel = f"paramiko.transport.attempt{i}"
    t = None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                        source_address=(spec["source"], 0))
        t = paramiko.Transport(sock)
        t.set_log_channel(channel)
        t.banner_timeout = 30
        t.auth_timeout = 30
        t.start_client(timeout=30)
        t.auth_password(spec["user"], spec["password"], fallback=False)
        out = ""
        if spec.get("command"):
            ch = t.open_session(timeout=30)
            ch.exec_command(spec["command"])
            out = ch.makefile("rb").read().decode()
        return {"ok": True, "stdout": out}
    except Exception as e:  # the test reads what went wrong
        if t is not None:
            # A server that refuses because it is busy says so in a
            # disconnect right after the failure: read it (3 s at most).
            deadline = time.time() + 3
            while t.is_active() and time.time() < deadline:
                time.sleep(0.05)
            t.close()
            t.join(5)
        with disconnects.mutex:
            said = disconnects.text.get(channel, "")
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "disconnect": said}
    finally:
        if t is not None:
            t.close()


def main():
    port, threads, specs = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    disconnects = Disconnects()
    log = logging.getLogger("paramiko.transport")
    log.setLevel(logging.INFO)
    log.addHandler(disconnects)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda a: attempt(port, a[0], a[1], disconnects),
                                enumerate(specs)))
    print(json.dumps(results))


main()
