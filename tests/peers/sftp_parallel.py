#!/usr/bin/env python3
"""Parallel uploads with paramiko (a client nobody here wrote): CONNECTIONS
SSH connections at once, each with HANDLES files open in its SFTP channel;
once every file is open, each connection writes SIZE bytes to each of its
files in 4 KiB pieces taken in turn, then closes them. File K of the run is
DIR/up-K, filled with byte K+1. Prints one JSON object:
{"up-K": "ok" | "error: MESSAGE"}.

(Each write waits for its answer: paramiko drops the answers of pipelined
writes and the errors of CLOSE, so only these show a refusal for sure.)

usage: sftp_parallel.py PORT USER KEYFILE CONNECTIONS HANDLES SIZE DIR
"""
import json
import socket
import sys
import threading

try:
    import paramiko
except ImportError:
    sys.exit("paramiko is missing: pip install 'paramiko==3.5.1' (.ci/run does)")

PIECE = 4096


def connection(port, user, keyfile, names, size, barrier, out):
    t = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=30))
    t.start_client(timeout=30)
    t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(keyfile))
    sftp = paramiko.SFTPClient.from_transport(t)
    sftp.get_channel().settimeout(60)
    files = {}
    for path, byte in names:
        f = sftp.open(path, "wb")
        files[path] = (f, bytes([byte]) * PIECE)
    barrier.wait(timeout=60)
    failed = {}
    for offset in range(0, size, PIECE):
        for path, (f, piece) in files.items():
            if path in failed:
                continue
            try:
                f.write(piece[: min(PIECE, size - offset)])
                f.flush()
            except (IOError, OSError) as e:
                failed[path] = f"error: {e}"
    for path, (f, _) in files.items():
        try:
            f.close()
            out[path] = failed.get(path, "ok")
        except (IOError, OSError) as e:
            out[path] = failed.get(path, f"error: {e}")
    t.close()


def main():
    port, user, keyfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    connections, handles, size, folder = (int(sys.argv[4]), int(sys.argv[5]),
                                          int(sys.argv[6]), sys.argv[7])
    barrier = threading.Barrier(connections)
    out = {}
    threads = []
    for c in range(connections):
        names = [(f"{folder}/up-{c * handles + h}", c * handles + h + 1)
                 for h in range(handles)]
        threads.append(threading.Thread(
            target=connection, args=(port, user, keyfile, names, size, barrier, out)))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    print(json.dumps({k.rsplit("/", 1)[1]: v for k, v in sorted(out.items())}))


main()
