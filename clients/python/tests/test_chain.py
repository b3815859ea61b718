"""Against a real 3-member chain: ZooKeeper at $CHAINTABLE_ZK, members
$CHAINTABLE_CHAIN (head first, comma-separated), started by the project's
test harness (tests/python_client.rs)."""
import os
import unittest

from chaintable import ChainClient, ChainWatch, Client, Retry, ServerError, find_members

ZK = os.environ.get("CHAINTABLE_ZK")
CHAIN = os.environ.get("CHAINTABLE_CHAIN", "").split(",")


@unittest.skipUnless(ZK, "set CHAINTABLE_ZK and CHAINTABLE_CHAIN to a running chain")
class Chain(unittest.TestCase):
    def test_the_spec_recipe_finds_the_members_in_order(self):
        self.assertEqual(find_members(ZK), CHAIN)

    def test_writes_at_the_head_are_read_at_the_tail(self):
        with ChainClient(ZK) as cc:
            w = cc.put(b"py-chain", b"replicated")
            v = cc.get(b"py-chain")
            self.assertEqual((v.value, v.version), (b"replicated", w.op_id))
            self.assertEqual(cc.verify(w.op_id), "executed")
        with Client(CHAIN[-1]) as tail:
            self.assertEqual(tail.hello.role, "tail")
            self.assertEqual(tail.get(b"py-chain").value, b"replicated")

    def test_compare_and_set_through_the_chain(self):
        with ChainClient(ZK) as cc:
            first = cc.put_if(b"py-chain-cas", b"a", 0)
            self.assertTrue(first.written)
            self.assertEqual(cc.put_if(b"py-chain-cas", b"b", 0).version, first.op_id)
            self.assertEqual(cc.get(b"py-chain-cas").value, b"a")

    def test_reads_are_spread_over_every_member(self):
        with ChainClient(ZK) as cc:
            w = cc.put(b"py-craq", b"v")
            for _ in range(3):
                self.assertEqual(cc.get(b"py-craq").version, w.op_id)
            self.assertEqual(sorted(cc._conns), sorted(CHAIN), "a connection to each member")
        for addr in CHAIN:
            with Client(addr) as c:
                self.assertTrue(c.hello.craq_reads, addr)

    def test_a_batch_through_the_chain(self):
        with ChainClient(ZK) as cc:
            op = cc.mwrite([(b"py-chain-b1", b"x"), (b"py-chain-b2", b"y")])
            got = cc.mget([b"py-chain-b1", b"py-chain-b2"])
            self.assertEqual([(v.version, v.value) for v in got], [(op, b"x"), (op, b"y")])

    def test_wrong_roles_redirect_and_the_client_follows(self):
        with Client(CHAIN[0]) as head:
            # VERIFY is answered at the tail alone (a GET of a clean key
            # is answered at any member: CRAQ, spec section 5.5).
            with self.assertRaises(ServerError) as e:
                head.verify(1)
            self.assertEqual((e.exception.name, e.exception.redirect, e.exception.retry),
                             ("NOT_TAIL", CHAIN[-1], Retry.RETRIABLE))
        with ChainClient(ZK) as cc:
            cc.members = list(reversed(cc.members))  # a stale view
            w = cc.put(b"py-redirected", b"1")
            self.assertEqual(cc.get(b"py-redirected").version, w.op_id)


if __name__ == "__main__":
    unittest.main()

    def test_a_chain_watch_streams_committed_writes_from_the_tail(self):
        w = ChainWatch(ZK, b"py-chain-w/")
        try:
            self.assertEqual(w.addr, CHAIN[-1], "opened at the tail first")
            with ChainClient(ZK) as cc:
                ops = [cc.put(b"py-chain-w/%d" % i, b"%d" % i).op_id for i in range(3)]
            got = [w.next(timeout=5.0) for _ in range(3)]
            self.assertEqual([u.seq for u in got], ops)
            self.assertEqual([u.changes[0].value for u in got], [b"0", b"1", b"2"])
        finally:
            w.close()
        # Any member serves a watch: the head resumes it from the first op.
        with Client(CHAIN[0]).watch(b"py-chain-w/", ops[0]) as at_head:
            self.assertEqual([at_head.next(timeout=5.0).seq for _ in range(2)], ops[1:])

