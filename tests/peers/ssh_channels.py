#!/usr/bin/env python3
"""Opens as many session channels as it can on one SSH connection (paramiko,
a client nobody here wrote) and prints JSON: how many opened, and the first
refusal.

usage: ssh_channels.py PORT USER KEYFILE WANT
"""
import json
import sys

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")


def main():
    port, user, keyfile, want = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", port=port, username=user, key_filename=keyfile,
              look_for_keys=False, allow_agent=False, timeout=10)
    t = c.get_transport()
    opened, refused, held = 0, None, []
    for _ in range(want):
        try:
            held.append(t.open_session(timeout=10))
            opened += 1
        except paramiko.ChannelException as e:
            refused = f"{e.code}: {e.text}"
            break
    # The connection still works: one channel closed makes room again.
    again = None
    if refused and held:
        held.pop().close()
        try:
            held.append(t.open_session(timeout=10))
            again = True
        except paramiko.ChannelException:
            again = False
    print(json.dumps({"opened": opened, "refused": refused, "again": again}))
    c.close()


main()
