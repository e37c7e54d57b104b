#!/usr/bin/env python3
"""A workload for the end-to-end tests: every kind of activity podtrace measures, in a loop.

  traffic.py DNS_PORT

- TCP: connects to a local server and sends 10 kB per connection (network bytes, connect
  latency, RTT);
- DNS: a query to a local UDP responder on 127.0.0.1:DNS_PORT that answers after 10 ms;
- file system: writes 4 KiB to a regular file, fsyncs it and reads it back;
- off-CPU: sleeps 10 ms between rounds;
- CPU: a child process spins, so a CPU quota on the cgroup is used up (resource alert level).
Runs until killed; everything it talks to is on 127.0.0.1.
"""
import os, socket, struct, sys, tempfile, threading, time

dns_port = int(sys.argv[1])

if os.fork() == 0:
    while True:  # the CPU burner
        pass

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)


def serve():
    while True:
        conn, _ = srv.accept()
        while conn.recv(65536):
            pass
        conn.close()


dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", dns_port))


def answer():
    while True:
        query, addr = dns.recvfrom(512)
        time.sleep(0.01)
        dns.sendto(query[:2] + b"\x81\x80" + query[4:], addr)


threading.Thread(target=serve, daemon=True).start()
threading.Thread(target=answer, daemon=True).start()
resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
resolver.settimeout(2)
path = os.path.join(tempfile.mkdtemp(prefix="podtrace-workload-"), "data")
n = 0
while True:
    c = socket.create_connection(srv.getsockname())
    c.sendall(b"x" * 10000)
    c.close()
    with open(path, "wb") as f:
        f.write(b"y" * 4096)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        f.read()
    query = struct.pack(">HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
    resolver.sendto(query, ("127.0.0.1", dns_port))
    try:
        resolver.recvfrom(512)
    except socket.timeout:
        pass
    n += 1
    time.sleep(0.01)
