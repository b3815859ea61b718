"""Against a real cluster of two chains: ZooKeeper at $CHAINTABLE_ZK, the
cluster root at $CHAINTABLE_CLUSTER whose map gives chain `a` the keys
below `m` and chain `b` the rest (started by tests/python_client.rs)."""
import os
import unittest

from chaintable import Client, ClusterClient, ServerError, ShardMap

ZK = os.environ.get("CHAINTABLE_ZK")
CLUSTER = os.environ.get("CHAINTABLE_CLUSTER")
MEMBERS = os.environ.get("CHAINTABLE_CLUSTER_MEMBERS", "").split(",")


class Map(unittest.TestCase):
    def test_the_spec_example_parses_and_routes(self):
        m = ShardMap.parse(b"shard-map 1\nrange - a\nrange 68 b\nrange 70 c\n")
        self.assertEqual([m.chain_of(k) for k in (b"a", b"h", b"gz", b"p", b"\xff")],
                         ["a", "b", "a", "c", "c"])
        for bad in (b"shard-map 1\nrange 61 a\n", b"shard-map x\nrange - a\n",
                    b"shard-map 1\nrange - a\nrange 62 b\nrange 61 c\n"):
            with self.assertRaises(ValueError):
                ShardMap.parse(bad)


@unittest.skipUnless(ZK and CLUSTER, "set CHAINTABLE_ZK and CHAINTABLE_CLUSTER to a running cluster")
class Cluster(unittest.TestCase):
    def test_keys_go_to_their_chains_and_reads_merge(self):
        with ClusterClient(ZK, CLUSTER) as cc:
            words = [b"apple", b"kiwi", b"lemon", b"mango", b"pear", b"zucchini"]
            for w in words:
                cc.put(w, w.upper())
            self.assertEqual([v.value for v in cc.mget(list(reversed(words)))],
                             [w.upper() for w in reversed(words)])
            self.assertEqual(cc.size(), len(words))
            page, nxt = cc.range(b"k", b"", 3)
            self.assertEqual(([e.key for e in page], nxt), ([b"kiwi", b"lemon", b"mango"], b"pear"))
            page, nxt = cc.range(nxt, b"", 10)
            self.assertEqual(([e.key for e in page], nxt), ([b"pear", b"zucchini"], b""))
        # A member of chain a refuses a key of chain b, naming the map.
        with Client(MEMBERS[0]) as a:
            with self.assertRaises(ServerError) as e:
                a.put(b"zebra", b"x")
            self.assertEqual((e.exception.name, e.exception.redirect), ("WRONG_SHARD", "map:1"))
