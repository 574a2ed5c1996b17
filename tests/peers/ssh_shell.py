#!/usr/bin/env python3
"""Drives an interactive SSH shell with a pty through paramiko (a client
nobody here wrote); prints one JSON object.

usage: ssh_shell.py PORT USER PASSWORD STEP...
  the password method; then a pty (80x24, xterm) and a shell, then each STEP:
    send:TEXT      types TEXT and Enter (\r)
    closed:SECONDS waits until the server closes the channel or the
                   connection (fails if it is still open after SECONDS)
    type:TEXT      types TEXT as is (\\x1b, \\r and \\x03 escapes allowed)
    expect:TEXT    waits (20 s at most) until the output since the last
                   expect contains TEXT
    resize:C:R     changes the window to C columns, R rows
result: {"ok": true, "output": "...", "status": N}
      | {"ok": false, "output": "...", "error": "..."}
"""
import json
import socket
import sys
import time

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def main():
    port, user, password, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    t = paramiko.Transport(sock)
    t.banner_timeout = 20
    t.auth_timeout = 20
    output = ""
    seen = 0
    result = {}
    try:
        t.start_client(timeout=20)
        t.auth_password(user, password, fallback=False)
        ch = t.open_session(timeout=20)
        ch.get_pty(term="xterm", width=80, height=24)
        ch.invoke_shell()
        ch.settimeout(0.2)

        def pump():
            nonlocal output
            try:
                data = ch.recv(65536)
                if data:
                    output += data.decode(errors="replace")
                return bool(data)
            except socket.timeout:
                return True

        for step in steps:
            kind, _, arg = step.partition(":")
            if kind == "send":
                ch.sendall((arg + "\r").encode())
            elif kind == "type":
                ch.sendall(arg.encode().decode("unicode_escape").encode("latin-1"))
            elif kind == "resize":
                c, r = arg.split(":")
                ch.resize_pty(width=int(c), height=int(r))
            elif kind == "expect":
                deadline = time.time() + 20
                while arg not in output[seen:]:
                    if time.time() > deadline or ch.exit_status_ready() and not ch.recv_ready():
                        raise TimeoutError(f"never saw {arg!r}")
                    pump()
                seen = output.index(arg, seen) + len(arg)
            elif kind == "closed":
                deadline = time.time() + float(arg)
                while not (ch.closed or ch.exit_status_ready() or not t.is_active()):
                    if time.time() > deadline:
                        raise TimeoutError(f"still open after {arg} s")
                    if not pump():
                        break
            else:
                raise ValueError(f"unknown step {step!r}")
        deadline = time.time() + 20
        while not ch.exit_status_ready() and t.is_active() and time.time() < deadline:
            pump()
        while ch.recv_ready():
            pump()
        status = ch.recv_exit_status() if ch.exit_status_ready() else None
        result = {"ok": True, "output": output, "status": status}
    except Exception as e:  # the test reads what went wrong
        result = {"ok": False, "output": output, "error": f"{type(e).__name__}: {e}"}
    finally:
        t.close()
    print(json.dumps(result))


main()
