#!/usr/bin/env python3
"""Runs SFTP steps with paramiko (a client nobody here wrote) on one open
file at a time and prints one JSON list: each step's outcome ("ok", what
was read, a size, or "error: MESSAGE"). A failed step does not stop the
steps after it.

usage: sftp_steps.py PORT USER KEYFILE STEPS_JSON

steps:
  ["open", PATH, MODE]        paramiko's open(PATH, MODE): "wb", "ab", "r+b", "xb"
  ["open_flags", PATH, N]     an SFTP OPEN with exactly the flags N
                              (READ 1, WRITE 2, APPEND 4, CREAT 8, TRUNC 16, EXCL 32)
  ["pipelined"]               writes on the open file stop waiting for their answers
  ["write", TEXT]             TEXT as latin-1 bytes (then flushed: one SFTP WRITE
                              per 32 KiB)
  ["write_n", N, BYTE]        N bytes of value BYTE
  ["read", N]                 N bytes, or to the end with -1 (the text read)
  ["seek", N]
  ["truncate", N]             FSETSTAT size on the open file
  ["setstat_size", PATH, N]   SETSTAT size (paramiko's sftp.truncate)
  ["stat", PATH]              the size
  ["close"]
"""
import json
import socket
import sys

try:
    import paramiko
    from paramiko.sftp import CMD_HANDLE, CMD_OPEN
    from paramiko.sftp_attr import SFTPAttributes
    from paramiko.sftp_file import SFTPFile
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def open_flags(sftp, path, flags):
    """An SFTPFile opened with exactly `flags` on the wire."""
    kind, msg = sftp._request(CMD_OPEN, path, flags, SFTPAttributes())
    if kind != CMD_HANDLE:
        raise IOError("expected a handle")
    mode = "a+b" if flags & 4 else "r+b"
    return SFTPFile(sftp, msg.get_binary(), mode)


def main():
    port, user, keyfile, steps = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                  json.loads(sys.argv[4]))
    t = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=30))
    t.start_client(timeout=30)
    t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(keyfile))
    sftp = paramiko.SFTPClient.from_transport(t)
    sftp.get_channel().settimeout(30)
    f, out = None, []
    for step in steps:
        op, args = step[0], step[1:]
        try:
            result = "ok"
            if op == "open":
                f = sftp.open(args[0], args[1])
            elif op == "open_flags":
                f = open_flags(sftp, args[0], args[1])
            elif op == "pipelined":
                f.set_pipelined(True)
            elif op == "write":
                f.write(args[0].encode("latin-1"))
                f.flush()
            elif op == "write_n":
                f.write(bytes([args[1]]) * args[0])
                f.flush()
            elif op == "read":
                data = f.read() if args[0] < 0 else f.read(args[0])
                result = data.decode("latin-1")
            elif op == "seek":
                f.seek(args[0])
            elif op == "truncate":
                f.truncate(args[0])
            elif op == "setstat_size":
                sftp.truncate(args[0], args[1])
            elif op == "stat":
                result = sftp.stat(args[0]).st_size
            elif op == "close":
                f, closing = None, f
                closing.close()
            else:
                result = f"error: no step {op!r}"
        except (IOError, OSError, EOFError, paramiko.SSHException) as e:
            result = f"error: {e}"
        except AttributeError:
            # A step on the file after its open failed.
            result = "error: no file is open"
        out.append(result)
    print(json.dumps(out))
    t.close()


main()
