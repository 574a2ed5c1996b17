#!/usr/bin/env python3
"""Opens one file again and again over several SFTP channels of one SSH
connection (paramiko, a client nobody here wrote) until the server
refuses, keeping every handle open; prints JSON: how many opened, the
refusal, and whether an open works again once the handles are closed.

usage: sftp_open_many.py PORT USER KEYFILE PATH CHANNELS PER_CHANNEL
"""
import json
import sys

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def main():
    port, user, keyfile, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    channels, per = int(sys.argv[5]), int(sys.argv[6])
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", port=port, username=user, key_filename=keyfile,
              look_for_keys=False, allow_agent=False, timeout=10)
    sftps = [c.open_sftp() for _ in range(channels)]
    held, refusal = [], None
    for s in sftps:
        for _ in range(per):
            try:
                held.append(s.open(path, "rb"))
            except IOError as e:
                refusal = str(e)
                break
        if refusal and "handles" not in refusal:
            break
        if refusal:
            refusal = None
    opened = len(held)
    for f in held:
        f.close()
    try:
        sftps[0].open(path, "rb").close()
        again = True
    except IOError:
        again = False
    print(json.dumps({"opened": opened, "refusal": refusal, "again": again}))
    c.close()


main()
