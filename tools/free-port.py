#!/usr/bin/env python3
"""Print a loopback port of this checkout's own: `tools/free-port.py SEED`.

The port follows from SEED (the Makefile passes HLS_MOLECULE_ID, a hash of the checkout's path) in
20000-31999, below Linux's ephemeral ports, so one checkout keeps its port from run to run; when something
already listens there (another checkout's container, any server), the next port that can be bound is taken.
"""

import hashlib
import socket
import sys

LOW, HIGH = 20000, 32000


def free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(seed):
    span = HIGH - LOW
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % span
    for step in range(span):
        port = LOW + (start + step) % span
        if free(port):
            return port
    raise SystemExit(f"free-port: no free loopback port in {LOW}-{HIGH - 1}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: free-port.py SEED")
    print(main(sys.argv[1]))
