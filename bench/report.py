#!/usr/bin/env python3
"""Turns compare.sh's JSON lines into one table: ours, the peer's, ratio."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
secs = sys.argv[2] if len(sys.argv) > 2 else "?"


def find(target, test, **kw):
    for r in rows:
        if r.get("target") == target and r.get("test") == test and all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def ratio(a, b, higher_better=True):
    if not a or not b:
        return "-"
    return f"{(a / b if higher_better else b / a):.2f}x"


print(f"| workload | metric | chaintable | peer | ours vs peer |")
print(f"|---|---|---|---|---|")
for P in (1, 16):
    for test, name in (("put", "SET"), ("get", "GET")):
        o, r = find("chaintable", test, pipeline=P), find("redis", test, pipeline=P)
        if not o or not r:
            continue
        w = f"standalone {name} P={P}, 50 clients (vs Redis)"
        print(f"| {w} | ops/s | {o['ops_per_sec']:,.0f} | {r['ops_per_sec']:,.0f} | {ratio(o['ops_per_sec'], r['ops_per_sec'])} |")
        print(f"| {w} | p99 µs | {o['p99_us']} | {r['p99_us']} | {ratio(o['p99_us'], r['p99_us'], False)} |")
        print(f"| {w} | server CPU µs/op | {o['cpu_us_per_op']} | {r['cpu_us_per_op']} | {ratio(o['cpu_us_per_op'], r['cpu_us_per_op'], False)} |")
for P in (1, 16):
    for test, name in (("put", "SET"), ("get", "GET")):
        t, o = find("chaintable-tls", test, pipeline=P), find("chaintable", test, pipeline=P)
        if not t or not o:
            continue
        w = f"standalone {name} P={P}, 50 clients, client TLS (vs plaintext)"
        print(f"| {w} | ops/s | {t['ops_per_sec']:,.0f} | {o['ops_per_sec']:,.0f} | {ratio(t['ops_per_sec'], o['ops_per_sec'])} |")
        print(f"| {w} | server CPU µs/op | {t['cpu_us_per_op']} | {o['cpu_us_per_op']} | {ratio(t['cpu_us_per_op'], o['cpu_us_per_op'], False)} |")
for c in (1, 100):
    for test in ("put", "get"):
        o, e = find("chain", test, clients=c), find("etcd", test, clients=c)
        if not o or not e:
            continue
        w = f"3 members, {test}, {c} client{'s' if c > 1 else ''} (vs etcd)"
        print(f"| {w} | ops/s | {o['ops_per_sec']:,.0f} | {e['ops_per_sec']:,.0f} | {ratio(o['ops_per_sec'], e['ops_per_sec'])} |")
        print(f"| {w} | p99 µs | {o['p99_us']} | {e['p99_us']} | {ratio(o['p99_us'], e['p99_us'], False)} |")
f = find("chain", "failover")
if f:
    print(f"| failover: kill -9 head -> first write | ms | {f['ms']} | - | target <= 1500 |")
s = find("chain", "state_transfer")
if s:
    print(f"| state transfer to a joiner ({s['bytes'] / 1e9:.2f} GB) | MB/s | {s['mb_per_sec']} | - | target >= 300 |")
print(f"\n({secs} s per throughput test; ratios > 1 favour chaintable)")
