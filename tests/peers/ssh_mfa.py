#!/usr/bin/env python3
"""Second-factor logins with paramiko, codes from pyotp (clients nobody here
wrote); prints one JSON object.

usage: ssh_mfa.py PORT MODE USER FIRST CODE STEP...
  MODE interactive: keyboard-interactive only: FIRST to the Password prompt,
                    CODE to the Code prompt
  MODE key:         the public key in file FIRST (a person without a factor;
                    paramiko re-sends its service request before a second
                    method, which russh ignores, so key-then-code runs with
                    OpenSSH in openssh_mfa.py)
  CODE: totp:SECRET[:OFFSET]  pyotp's code for now (+OFFSET seconds)
        text:WORDS            WORDS as they are (a recovery code, a wrong one)
        none                  no code is expected
  STEP (after login, on a pty shell):
        send:TEXT    types TEXT and Enter
        code:SECRET[:OFFSET]  types pyotp's code (now + OFFSET s) and Enter;
                     an empty SECRET is the one `secret` read
        expect:TEXT  waits (20 s at most) for TEXT in the output
        secret       reads the base32 secret after `secret: ` in the output
  no STEP: runs `whoami` as one command.
result: {"ok": true, "partial": [...], "rounds": [...], "output": "...", "status": N}
      | {"ok": false, "partial": [...], "rounds": [...], "error": "..."}
"""
import json
import socket
import sys
import time

try:
    import paramiko
    import pyotp
except ImportError as e:
    sys.exit(f"{e.name} is missing: pip install 'paramiko==3.5.1' 'pyotp==2.9.0' (.ci/run does)")


def code_of(spec):
    kind, _, rest = spec.partition(":")
    if kind == "totp":
        secret, _, offset = rest.partition(":")
        return pyotp.TOTP(secret).at(time.time() + float(offset or 0))
    if kind == "text":
        return rest
    return ""


def main():
    port, mode, user, first, code, steps = (
        int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:])
    rounds, partial, codes = [], [], []
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    t = paramiko.Transport(sock)
    t.banner_timeout = 20
    t.auth_timeout = 20
    result = {}

    def handler(title, instructions, prompts):
        rounds.append({"instructions": instructions, "prompts": [p for p, _ in prompts]})
        answers = []
        for p, _ in prompts:
            if "Code" in p:
                codes.append(code_of(code))
                answers.append(codes[-1])
            elif "Password" in p:
                answers.append(first)
            else:
                answers.append("")
        return answers

    try:
        t.start_client(timeout=20)
        if mode == "key":
            key = paramiko.Ed25519Key.from_private_key_file(first)
            partial = t.auth_publickey(user, key)
        if mode == "interactive" or partial:
            t.auth_interactive(user, handler)
        ch = t.open_session(timeout=20)
        if not steps:
            ch.exec_command("whoami")
            out = ch.makefile("rb").read().decode() + ch.makefile_stderr("rb").read().decode()
            result = {"ok": True, "partial": partial, "rounds": rounds, "output": out,
                      "status": ch.recv_exit_status(), "codes": codes}
        else:
            ch.get_pty(term="xterm", width=200, height=50)
            ch.invoke_shell()
            ch.settimeout(0.2)
            output, seen, secret = "", 0, ""

            def wait_for(text):
                nonlocal output
                deadline = time.time() + 20
                while text not in output[seen:]:
                    if time.time() > deadline:
                        raise TimeoutError(f"never saw {text!r} in {output[seen:]!r}")
                    try:
                        output += ch.recv(65536).decode(errors="replace")
                    except socket.timeout:
                        pass
                return output.index(text, seen) + len(text)

            for step in steps:
                kind, _, arg = step.partition(":")
                if kind == "send":
                    ch.sendall((arg + "\r").encode())
                elif kind == "code":
                    key, _, offset = arg.partition(":")
                    codes.append(pyotp.TOTP(key or secret).at(time.time() + float(offset or 0)))
                    ch.sendall((codes[-1] + "\r").encode())
                elif kind == "expect":
                    seen = wait_for(arg)
                elif kind == "secret":
                    seen = wait_for("secret: ")
                    wait_for("\n")
                    secret = output[seen:].split()[0]
                else:
                    raise ValueError(f"unknown step {step!r}")
            result = {"ok": True, "partial": partial, "rounds": rounds, "output": output,
                      "status": 0, "codes": codes}
    except Exception as e:  # the test reads what went wrong
        result = {"ok": False, "partial": partial, "rounds": rounds, "codes": codes,
                  "error": f"{type(e).__name__}: {e}"}
    finally:
        t.close()
    print(json.dumps(result))


main()
