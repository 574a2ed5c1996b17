#!/usr/bin/env python3
"""OpenSSH's `ssh` driven through pexpect, codes from pyotp (clients nobody
here wrote); prints one JSON object.

usage: openssh_mfa.py PORT USER KEY PASSWORD CODE COMMAND
  KEY:      a private key file (publickey, then keyboard-interactive), or -
  PASSWORD: the answer to the password prompt (the password method, then
            keyboard-interactive), or -
  CODE:     totp:SECRET[:OFFSET] | text:WORDS, typed at every `Code: `
result: {"status": N, "prompts": [...], "output": "...", "codes": [...]}
"""
import json
import sys
import time

try:
    import pexpect
    import pyotp
except ImportError as e:
    sys.exit(f"{e.name} is missing: pip install 'pexpect==4.9.0' 'pyotp==2.9.0' (.ci/run does)")


def code_of(spec):
    kind, _, rest = spec.partition(":")
    if kind == "totp":
        secret, _, offset = rest.partition(":")
        return pyotp.TOTP(secret).at(time.time() + float(offset or 0))
    return rest


def main():
    port, user, key, password, code, command = sys.argv[1:7]
    args = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "-o", "NumberOfPasswordPrompts=1",
            "-p", port]
    if key != "-":
        args += ["-i", key, "-o", "IdentitiesOnly=yes",
                 "-o", "PreferredAuthentications=publickey,keyboard-interactive"]
    else:
        args += ["-o", "PubkeyAuthentication=no",
                 "-o", "PreferredAuthentications=password,keyboard-interactive"]
    args += [f"{user}@127.0.0.1", command]
    child = pexpect.spawn("ssh", args, encoding="utf-8", timeout=30)
    prompts, output, codes = [], "", []
    while True:
        i = child.expect(["Code: ", "password: ", "Password: ", pexpect.EOF])
        output += child.before
        if i == 3:
            break
        prompts.append(child.after)
        if i == 0:
            codes.append(code_of(code))
        child.sendline(codes[-1] if i == 0 else password)
    child.close()
    status = child.exitstatus if child.exitstatus is not None else -1
    print(json.dumps({"status": status, "prompts": prompts, "output": output, "codes": codes}))


main()
