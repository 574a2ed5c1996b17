#!/usr/bin/env python3
"""Scripted SSH logins with paramiko (a client nobody here wrote); prints one
JSON object.

usage: ssh.py PORT password USER PASSWORD COMMAND
       ssh.py PORT interactive USER COMMAND ANSWER...
  password: the plain `password` method only, then COMMAND.
  interactive: keyboard-interactive only; each round takes as many ANSWERs
  as it has prompts; every round's instructions and prompts are reported.
result: {"ok": true, "rounds": [...], "stdout": "...", "stderr": "...", "status": N}
      | {"ok": false, "rounds": [...], "error": "..."}
"""
import json
import socket
import sys

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def main():
    port, method, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rounds = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    t = paramiko.Transport(sock)
    t.banner_timeout = 20
    t.auth_timeout = 20
    result = {"ok": False, "rounds": rounds}
    try:
        t.start_client(timeout=20)
        if method == "password":
            password, command = sys.argv[4], sys.argv[5]
            t.auth_password(user, password, fallback=False)
        else:
            command, answers = sys.argv[4], list(sys.argv[5:])

            def handler(title, instructions, prompts):
                rounds.append({"instructions": instructions, "prompts": [p for p, _ in prompts]})
                out = []
                for _ in prompts:
                    out.append(answers.pop(0) if answers else "")
                return out

            t.auth_interactive(user, handler)
        ch = t.open_session(timeout=20)
        ch.exec_command(command)
        stdout = ch.makefile("rb").read().decode()
        stderr = ch.makefile_stderr("rb").read().decode()
        result = {"ok": True, "rounds": rounds, "stdout": stdout, "stderr": stderr,
                  "status": ch.recv_exit_status()}
    except Exception as e:  # the test reads what went wrong
        result = {"ok": False, "rounds": rounds, "error": f"{type(e).__name__}: {e}"}
    finally:
        t.close()
    print(json.dumps(result))


main()
