#!/usr/bin/env python3
"""Holds one file open over SFTP with paramiko (a client nobody here wrote)
and reads from it every half second until the server ends the channel or
SECONDS pass; prints `open` once the file is open, then one JSON object.

usage: sftp_hold.py PORT USER KEYFILE PATH SECONDS
result: {"reads": N, "ended": true|false, "after": S, "error": "..."}
"""
import json
import sys
import time

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def main():
    port, user, keyfile, path, seconds = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                          sys.argv[4], float(sys.argv[5]))
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", port=port, username=user, key_filename=keyfile,
              look_for_keys=False, allow_agent=False, timeout=20)
    sftp = c.open_sftp()
    sftp.get_channel().settimeout(5)
    f = sftp.open(path, "rb")
    print("open", flush=True)
    start = time.time()
    reads, error = 0, ""
    while time.time() - start < seconds:
        try:
            f.seek(0)
            f.read(1)
            reads += 1
        except Exception as e:  # the server ended the channel
            error = f"{type(e).__name__}: {e}"
            break
        time.sleep(0.5)
    print(json.dumps({"reads": reads, "ended": bool(error),
                      "after": round(time.time() - start, 1), "error": error}))
    c.close()


main()
