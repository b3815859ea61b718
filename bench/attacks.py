#!/usr/bin/env python3
"""Runs the hostile-network attacks that need no chain against a
table-server binary and prints one line of figures each, so two builds can
be compared (the figures in BENCHMARKS.md and the issue's closing note came
from running it on the build before and after). Standard library only.

Usage: bench/attacks.py path/to/table-server
(Servers go on loopback ports from 23001 up; logs in /tmp/attack-server-*.log.)"""
import os, socket, struct, subprocess, sys, time, zlib

BIN = sys.argv[1]

def frame(op, rid, payload, flags=0):
    h = struct.pack(">HBBHHQI", 0x4354, 1, op, flags, 0, rid, len(payload))
    return h + struct.pack(">I", zlib.crc32(h + payload) & 0xffffffff) + payload

def key(k): return struct.pack(">H", len(k)) + k
def data(d): return struct.pack(">I", len(d)) + d
HELLO = frame(1, 1, b"\x01\0\0\0\0\0\0")

port_counter = [23000]
def start(extra=(), ulimit=None):
    port_counter[0] += 1
    port = port_counter[0]
    cmd = [BIN, str(port), "4"] + list(extra)
    if ulimit:
        cmd = ["sh", "-c", f"ulimit -n {ulimit}; exec " + " ".join(cmd)]
    log = open(f"/tmp/attack-server-{port}.log", "w+")
    p = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL)
    p.log = log
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); break
        except OSError: time.sleep(0.05)
    return p, port

def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
    return 0

def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100

def recv_frames(s, n, timeout=5):
    s.settimeout(timeout); buf = b""; out = []
    try:
        while len(out) < n:
            while len(buf) >= 24:
                ln = struct.unpack(">I", buf[16:20])[0]
                if len(buf) < 24 + ln: break
                out.append((buf[3], struct.unpack(">Q", buf[8:16])[0], buf[24:24+ln])); buf = buf[24+ln:]
            if len(out) >= n: break
            d = s.recv(1 << 20)
            if not d: break
            buf += d
    except OSError: pass
    return out

def client(port):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(HELLO); recv_frames(s, 1); return s

def op_ok(port, timeout=2):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(HELLO + frame(3, 2, key(b"k")))
        r = recv_frames(s, 2, timeout)
        s.close()
        return len(r) == 2 and r[1][0] == 0x83
    except OSError:
        return False

def attack_pre_hello():
    p, port = start()
    before = rss_kib(p.pid); c0 = cpu_s(p.pid)
    hdr = bytearray(frame(0x86, 0, b"")); hdr[16:20] = struct.pack(">I", 16 << 20)
    socks = []
    for _ in range(16):
        s = socket.create_connection(("127.0.0.1", port)); s.settimeout(3)
        try:
            s.sendall(bytes(hdr) + b"\0" * (16 << 20))
        except OSError: pass
        socks.append(s)
    time.sleep(1)
    print(f"pre-HELLO 16 MiB frames x16: RSS +{(rss_kib(p.pid)-before)//1024} MiB, server CPU {cpu_s(p.pid)-c0:.2f} s")
    p.kill(); p.wait()

def attack_idle():
    p, port = start()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1100)]
    time.sleep(0.3)
    ok = sum(op_ok(port, 1) for _ in range(20))
    time.sleep(6)
    ok_later = sum(op_ok(port, 1) for _ in range(5))
    print(f"1100 idle sockets (limit 1024): {ok}/20 client operations succeed; after 6 s {ok_later}/5")
    for s in idle: s.close()
    p.kill(); p.wait(); p.log.seek(0)
    print(f"   log lines written for the idle flood: {len(p.log.read().splitlines())}")

def attack_amplify():
    p, port = start()
    c = client(port)
    c.sendall(frame(2, 2, key(b"big") + data(b"x" * (4 << 20)))); recv_frames(c, 1)
    before = rss_kib(p.pid); peak = before
    s = client(port)
    s.setblocking(False)
    payload = b"".join(frame(3, i + 10, key(b"big")) for i in range(1000))
    try: s.send(payload)
    except OSError: pass
    for _ in range(30):
        time.sleep(0.1); peak = max(peak, rss_kib(p.pid))
    alive = p.poll() is None
    print(f"1000 pipelined GETs of a 4 MiB value, never read: peak RSS +{(peak-before)//1024} MiB, server alive: {alive}")
    p.kill(); p.wait()

def attack_honest_reader():
    p, port = start()
    c = client(port)
    c.sendall(frame(2, 2, key(b"big") + data(b"x" * (8 << 20)))); recv_frames(c, 1)
    s = client(port)
    s.sendall(b"".join(frame(3, i + 10, key(b"big")) for i in range(10)))
    got = [f for f in recv_frames(s, 10, 10) if f[0] == 0x83]
    print(f"honest reader, 10 pipelined GETs of 8 MiB: {len(got)}/10 answered")
    p.kill(); p.wait()

def attack_emfile():
    p, port = start(ulimit=48)
    keeper = client(port)
    c0 = cpu_s(p.pid)
    flood = []
    for _ in range(200):
        try: flood.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
        except OSError: pass
    time.sleep(2)
    cpu = cpu_s(p.pid) - c0
    keeper.sendall(frame(3, 5, key(b"k")))
    served = len(recv_frames(keeper, 1, 3)) == 1
    for s in flood: s.close()
    p.kill(); p.wait(); p.log.seek(0)
    lines = sum(1 for l in p.log.read().splitlines() if "accept failed" in l)
    print(f"EMFILE under ulimit -n 48 with 200 connecting: server CPU {cpu:.2f} s in 2 s, {lines} log lines, existing client served: {served}")

def attack_reply_order():
    p, port = start()
    s = client(port)
    s.sendall(frame(2, 2, key(b"k") + data(b"v")) + frame(3, 3, key(b"k")) + b"garbage that is not a frame")
    got = recv_frames(s, 3, 3)
    print("PUT, GET, garbage in one send -> replies:", [(hex(o), rid) for o, rid, _ in got])
    p.kill(); p.wait()

for a in (attack_pre_hello, attack_idle, attack_amplify, attack_honest_reader, attack_emfile, attack_reply_order):
    try:
        a()
    except Exception as e:
        print(f"{a.__name__}: harness error {e}")
