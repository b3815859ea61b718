"""Every client request and reply vector of spec/vectors/frames.json,
encoded and decoded by this package: the spec and its vectors suffice."""
import json
import os
import unittest

from chaintable import wire

VECTORS = os.environ.get(
    "CHAINTABLE_VECTORS",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "spec", "vectors", "frames.json"))

REPLY_TYPES = {"HELLO_OK", "PUT_OK", "DEL_OK", "VALUE", "SIZE_OK", "KEYS", "ENTRIES",
               "STATS_OK", "VERIFY_OK", "AUTH_OK", "BACKUP_CHUNK", "ERROR", "CPUT_OK", "CDEL_OK",
               "MGET_OK", "MWRITE_OK", "WATCH_EVENT", "UNWATCH_OK", "RANGE_OK"}


def request_of(m):
    """The request a vector's JSON form describes, built with this package."""
    t = m["type"]
    k = m.get("key", "").encode()
    if t == "HELLO":
        if m["role"] != "client":
            return None  # the obsolete peer HELLO: not a client's
        return wire.hello(m["features"])
    if t == "PUT":
        return wire.put(k, m["value"].encode(), m.get("async", False), m.get("no_forward", False))
    if t == "GET":
        return wire.get(k, m.get("min_seq", 0))
    if t == "DEL":
        return wire.delete(k, m.get("async", False))
    if t == "VERIFY":
        return wire.verify(m["op_id"])
    if t == "CPUT":
        return wire.put_if(k, m["value"].encode(), m["expected"])
    if t == "CDEL":
        return wire.delete_if(k, m["expected"])
    if t == "MGET":
        return wire.mget([x.encode() for x in m["keys"]])
    if t == "MWRITE":
        return wire.mwrite([(o["key"].encode(), o["value"].encode() if o["op"] == "put" else None)
                            for o in m["ops"]])
    if t == "AUTH":
        return wire.auth(m["user"], m["password"])
    if t == "WATCH":
        return wire.watch(m["prefix"].encode(), m["from_seq"])
    if t == "UNWATCH":
        return wire.unwatch(m["watch_id"])
    if t == "RANGE":
        return wire.range_(m["from"].encode(), m["to"].encode(), m["limit"])
    simple = {"SIZE": wire.size, "GETKEYS": wire.getkeys, "GETTABLE": wire.gettable,
              "STATS": wire.stats, "BACKUP": wire.backup}
    return simple[t]() if t in simple else None


def check_reply(test, m, got):
    t = m["type"]
    if t == "HELLO_OK":
        test.assertEqual((got.version, got.payload_bytes_max, got.role, got.last_seq),
                         (m["version"], m["payload_bytes_max"], m["role"], m["last_seq"]))
        ext = m.get("extension")
        test.assertEqual(got.minor, ext["minor"] if ext else 0)
        test.assertEqual(got.limits, {l["name"]: l["value"] for l in ext["limits"]} if ext else {})
    elif t == "MGET_OK":
        test.assertEqual([None if v is None else (v.version, v.value) for v in got],
                         [None if v is None else (v["version"], v["value"].encode()) for v in m["values"]])
    elif t == "MWRITE_OK":
        test.assertEqual(got, m["op_id"])
    elif t == "WATCH_EVENT":
        test.assertEqual((got.seq, got.more), (m["seq"], m["more"]))
        test.assertEqual([(c.kind, c.key, c.value) for c in got.changes],
                         [(c["op"], c["key"].encode(), c["value"].encode() if "value" in c else None)
                          for c in m["changes"]])
    elif t == "UNWATCH_OK":
        test.assertEqual(got, m["found"])
    elif t == "RANGE_OK":
        test.assertEqual(([(e.key, e.version, e.value) for e in got[0]], got[1]),
                         ([(e["key"].encode(), e["version"], e["value"].encode()) for e in m["entries"]],
                          m["next"].encode()))
    elif t in ("CPUT_OK", "CDEL_OK"):
        test.assertEqual((got.op_id, got.outcome, got.version), (m["op_id"], m["outcome"], m["version"]))
    elif t in ("PUT_OK", "DEL_OK"):
        test.assertEqual((got.op_id, got.outcome), (m["op_id"], m["outcome"]))
    elif t == "VALUE":
        if m["found"]:
            test.assertEqual((got.version, got.value), (m["version"], m["value"].encode()))
        else:
            test.assertIsNone(got)
    elif t == "SIZE_OK":
        test.assertEqual(got, m["entries"])
    elif t == "KEYS":
        test.assertEqual(got, [k.encode() for k in m["keys"]])
    elif t == "ENTRIES":
        test.assertEqual([(e.key, e.version, e.value) for e in got],
                         [(e["key"].encode(), e["version"], e["value"].encode()) for e in m["entries"]])
    elif t == "STATS_OK":
        test.assertEqual(got, {f["name"]: f["value"] for f in m["fields"]})
    elif t == "VERIFY_OK":
        test.assertEqual(got, m["state"])
    elif t == "BACKUP_CHUNK":
        test.assertEqual(got, (m["last"], bytes.fromhex(m["data_hex"])))
    elif t == "ERROR":
        test.assertEqual((got.name, got.message, got.redirect), (m["code"], m["message"], m["redirect"]))


class Installed(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("CHAINTABLE_EXPECT_INSTALLED"), "run from the source tree")
    def test_the_installed_package_is_the_one_imported(self):
        import chaintable
        self.assertIn("site-packages", chaintable.__file__)


class Vectors(unittest.TestCase):
    def setUp(self):
        with open(VECTORS) as f:
            self.vectors = json.load(f)

    def test_requests_encode_to_the_vectors(self):
        done = 0
        for v in self.vectors["valid"]:
            m = v["message"]
            req = request_of(m) if m["type"] not in REPLY_TYPES else None
            if req is None:
                continue
            frame = wire.Frame(req.opcode, req.flags, m["request_id"], req.payload).encode()
            self.assertEqual(frame.hex(), v["hex"], v["name"])
            done += 1
        self.assertGreaterEqual(done, 12)

    def test_replies_decode_to_the_vectors(self):
        done = 0
        for v in self.vectors["valid"]:
            m = v["message"]
            if m["type"] not in REPLY_TYPES:
                continue
            raw = bytes.fromhex(v["hex"])
            opcode, _flags, rid, length, crc = wire.parse_header(raw[:24], 1 << 24)
            payload = raw[24:24 + length]
            wire.check_crc(raw[:24], payload, crc)
            self.assertEqual(rid, m["request_id"], v["name"])
            check_reply(self, m, wire.decode_reply(opcode, payload))
            done += 1
        self.assertGreaterEqual(done, 12)

    def test_malformed_frames_are_refused(self):
        frame_level = {"BAD_MAGIC", "UNSUPPORTED_VERSION", "BAD_CRC", "FRAME_TOO_LARGE",
                       "TRUNCATED", "UNKNOWN_OPCODE"}
        done = 0
        for v in self.vectors["malformed"]:
            if v["error"] not in frame_level:
                continue  # payload errors of requests: the server's to refuse
            raw = bytes.fromhex(v["hex"])
            with self.assertRaises(wire.ProtocolError, msg=v["name"]):
                if len(raw) < 24:
                    raise wire.ProtocolError("truncated header")
                opcode, _f, _r, length, crc = wire.parse_header(raw[:24], 16 * 1024 * 1024)
                if len(raw) < 24 + length:
                    raise wire.ProtocolError("truncated payload")
                wire.check_crc(raw[:24], raw[24:24 + length], crc)
                wire.decode_reply(opcode, raw[24:24 + length])
            done += 1
        self.assertGreaterEqual(done, 9)


if __name__ == "__main__":
    unittest.main()
