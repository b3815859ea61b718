"""Against a real standalone table-server at $CHAINTABLE_ADDR (started by
the project's test harness, tests/python_client.rs, with
--frame-bytes-max 65536)."""
import os
import unittest

from chaintable import Client, Retry, ServerError, wire

ADDR = os.environ.get("CHAINTABLE_ADDR")


@unittest.skipUnless(ADDR, "set CHAINTABLE_ADDR to a standalone table-server")
class Standalone(unittest.TestCase):
    def setUp(self):
        self.c = Client(ADDR)

    def tearDown(self):
        self.c.close()

    def test_hello_announces_protocol_1_1_and_the_limits(self):
        h = self.c.hello
        self.assertEqual((h.version, h.minor, h.role), (1, 1, "standalone"))
        self.assertEqual(h.payload_bytes_max, 65536)
        self.assertEqual(h.limits["value_bytes_max"], 65536 - 13)
        self.assertEqual(h.limits["key_bytes_max"], 1024)
        self.assertGreater(h.limits["inflight_max"], 0)

    def test_put_get_delete_and_versions(self):
        w = self.c.put(b"py-colour", b"blue")
        self.assertIn(w.outcome, ("absent", "existed"))
        v = self.c.get(b"py-colour")
        self.assertEqual((v.value, v.version), (b"blue", w.op_id))
        self.assertEqual(self.c.put(b"py-colour", b"red").outcome, "existed")
        self.assertEqual(self.c.delete(b"py-colour").outcome, "existed")
        self.assertIsNone(self.c.get(b"py-colour"))
        self.assertEqual(self.c.delete(b"py-colour").outcome, "absent")

    def test_size_keys_table_and_stats(self):
        for i in range(5):
            self.c.put(b"py-list-%d" % i, b"v%d" % i)
        keys = set(self.c.keys())
        self.assertTrue({b"py-list-%d" % i for i in range(5)} <= keys)
        self.assertEqual(self.c.size(), len(keys))
        table = {e.key: e.value for e in self.c.table()}
        self.assertEqual(table[b"py-list-3"], b"v3")
        stats = self.c.stats()
        self.assertEqual(stats["role"], "standalone")
        self.assertGreaterEqual(stats["ops_put"], 5)

    def test_compare_and_set(self):
        created = self.c.put_if(b"py-cas", b"1", 0)
        self.assertEqual((created.outcome, created.version), ("absent", created.op_id))
        lost = self.c.put_if(b"py-cas", b"2", 0)
        self.assertEqual((lost.written, lost.version), (False, created.op_id))
        self.assertEqual(self.c.verify(lost.op_id), "executed")
        won = self.c.put_if(b"py-cas", b"2", created.op_id)
        self.assertEqual(self.c.get(b"py-cas").value, b"2")
        self.assertEqual(self.c.delete_if(b"py-cas", created.op_id).outcome, "mismatch")
        gone = self.c.delete_if(b"py-cas", won.op_id)
        self.assertEqual((gone.outcome, gone.version), ("existed", 0))
        self.assertTrue(self.c.hello.features & wire.FEATURE_CAS)

    def test_batches(self):
        self.c.put(b"py-b-gone", b"x")
        op = self.c.mwrite([(b"py-b-1", b"one"), (b"py-b-2", b"two"), (b"py-b-gone", None)])
        got = self.c.mget([b"py-b-1", b"py-b-2", b"py-b-gone"])
        self.assertEqual([(v.version, v.value) if v else None for v in got],
                         [(op, b"one"), (op, b"two"), None])
        self.assertTrue(self.c.hello.features & wire.FEATURE_BATCH)
        with self.assertRaises(ServerError) as e:
            self.c.call(wire.Request(wire.Op.MWRITE, b"\x00\x00\x00\x00"))
        self.assertEqual(e.exception.name, "BAD_REQUEST")  # an empty batch

    def test_a_range_pages_through_keys_in_order(self):
        for i in range(30):
            self.c.put(b"py-r-%02d" % i, b"v%d" % i)
        self.c.put(b"py-s-after", b"outside")
        self.assertTrue(self.c.hello.features & wire.FEATURE_RANGE)
        seen, start = [], b"py-r-"
        while True:
            page, start = self.c.range(start, b"py-s", 7)
            self.assertLessEqual(len(page), 7)
            seen += [(e.key, e.value) for e in page]
            if not start:
                break
        self.assertEqual(seen, [(b"py-r-%02d" % i, b"v%d" % i) for i in range(30)])
        with self.assertRaises(ServerError) as e:
            self.c.call(wire.Request(wire.Op.RANGE, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
        self.assertEqual(e.exception.name, "BAD_REQUEST")  # a limit of 0

    def test_an_async_write_is_verified(self):
        w = self.c.put(b"py-async", b"x", asynchronous=True)
        self.assertEqual(w.outcome, "pending")
        for _ in range(200):
            if self.c.verify(w.op_id) == "executed":
                break
        self.assertEqual(self.c.verify(w.op_id), "executed")
        self.assertEqual(self.c.get(b"py-async").version, w.op_id)
        # A standalone server knows it never assigned an id (spec 4.1).
        self.assertEqual(self.c.verify(w.op_id + 10**9), "unknown")

    def test_pipelined_requests_answer_in_order(self):
        n = 1000
        puts = [wire.put(b"py-pipe-%d" % i, b"%d" % i) for i in range(n)]
        gets = [wire.get(b"py-pipe-%d" % i) for i in range(n)]
        results = self.c.pipeline(puts + gets)
        ids = [r.op_id for r in results[:n]]
        self.assertEqual(ids, sorted(ids), "writes from one connection execute in order")
        self.assertEqual([r.value for r in results[n:]], [b"%d" % i for i in range(n)])
        # Leave the table small enough for GETTABLE under a 64 KiB limit.
        gone = self.c.pipeline([wire.delete(b"py-pipe-%d" % i) for i in range(n)])
        self.assertEqual({r.outcome for r in gone}, {"existed"})

    def test_errors_carry_their_retry_class(self):
        big = b"x" * (self.c.hello.limits["value_bytes_max"] + 1)
        with self.assertRaises(ServerError) as e:
            self.c.put(b"py-big", big)
        self.assertEqual((e.exception.name, e.exception.retry), ("BAD_REQUEST", Retry.NOT_RETRIABLE))
        with self.assertRaises(ServerError) as e:
            self.c.call(wire.Request(0x30))
        self.assertEqual(e.exception.name, "UNKNOWN_OPCODE")
        # Both kept the connection.
        self.assertEqual(self.c.put(b"py-after", b"ok").outcome in ("absent", "existed"), True)

    def test_a_watch_streams_the_changes_under_its_prefix_in_order(self):
        start = self.c.put(b"py-w-before", b"x").op_id
        with Client(ADDR).watch(b"py-w/", start) as w:
            self.assertEqual(w.last_seq, start)
            a = self.c.put(b"py-w/a", b"1").op_id
            self.c.put(b"py-other", b"not watched")
            op = self.c.mwrite([(b"py-w/b", b"2"), (b"py-w/a", None)])
            got = [w.next(timeout=5.0) for _ in range(2)]
            self.assertEqual([u.seq for u in got], [a, op])
            self.assertEqual([(c.kind, c.key, c.value) for c in got[0].changes],
                             [("put", b"py-w/a", b"1")])
            self.assertEqual([(c.kind, c.key) for c in got[1].changes],
                             [("put", b"py-w/b"), ("del", b"py-w/a")])
            self.assertIsNone(w.next(timeout=0.2), "nothing else under the prefix")
            w.cancel()
        # Resuming from the first event's seq gives exactly what followed it.
        with Client(ADDR).watch(b"py-w/", a) as again:
            self.assertEqual(again.next(timeout=5.0).seq, op)
        self.assertTrue(self.c.hello.features & wire.FEATURE_WATCH)
        self.assertEqual(self.c.hello.limits["watches_per_conn_max"], 8)

    def test_a_watch_from_before_the_history_is_history_gone(self):
        # The harness keeps 16 MiB of history: overwrite one key past it.
        value = b"f" * 60000
        self.c.pipeline([wire.put(b"py-w-fill", value) for _ in range(320)])
        self.c.delete(b"py-w-fill")
        floor = self.c.stats()["watch_history_floor"]
        self.assertGreater(floor, 0, "the oldest changes were dropped")
        with self.assertRaises(ServerError) as e:
            Client(ADDR).watch(b"", floor - 1)
        self.assertEqual((e.exception.name, e.exception.retry), ("HISTORY_GONE", Retry.NOT_RETRIABLE))
        with Client(ADDR).watch(b"", floor) as w:
            self.assertEqual(w.last_seq, floor, "from the floor itself is still whole")

    def test_a_backup_is_a_snapshot_file(self):
        self.c.put(b"py-backup", b"kept")
        data = self.c.backup()
        self.assertEqual(data[:8], b"CTSNP\x00\x00\x01")
        self.assertIn(b"py-backup", data)


if __name__ == "__main__":
    unittest.main()
