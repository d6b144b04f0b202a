#!/usr/bin/env python3
"""What open connections cost the daemon in resident memory.

Starts KVACTORD on PORT (the embedded default model, metrics off), reads its
VmRSS, opens N connections and reads it again, sends one short request on
each and waits for every final line, then reads it a third time. Prints the
three figures in MiB (docs/reliability.md quotes them).

    scripts/connection_memory.py KVACTORD PORT N
"""
import socket
import subprocess
import sys
import time


def vm_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    exe, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    daemon = subprocess.Popen(
        [exe, "--port", str(port), "--metrics-port", "0", "--log-level", "warn",
         f"server.max_connections={n + 10}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:  # serving once a connection is accepted
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.time() > deadline or daemon.poll() is not None:
                    sys.exit("kvactord did not start")
                time.sleep(0.1)
        time.sleep(0.5)
        start = vm_rss_mib(daemon.pid)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        time.sleep(1.0)
        idle = vm_rss_mib(daemon.pid)
        for c in conns:
            c.sendall(b'{"id":1,"prompt":"Hi","max_tokens":2,"seed":1}\n')
        for c in conns:
            c.settimeout(30)
            reply = b""
            while b'"done":true' not in reply:
                chunk = c.recv(65536)
                if not chunk:
                    sys.exit("a connection closed before its final line")
                reply += chunk
        time.sleep(0.5)
        served = vm_rss_mib(daemon.pid)
        print(f"VmRSS {start:.0f} MiB; with {n} idle connections {idle:.0f} MiB (+{idle - start:.0f}); "
              f"after one request on each {served:.0f} MiB (+{served - start:.0f})")
        for c in conns:
            c.close()
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    main()
