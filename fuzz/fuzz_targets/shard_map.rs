//! Arbitrary bytes as the cluster root's data (the shard map, spec §8.1):
//! no panic, with or without a secret; a map that decodes re-encodes to
//! data that decodes to the same map, and routes any key to a chain it
//! names.
#![no_main]

use chaintable::auth::Secret;
use chaintable::cluster::ShardMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(b"fuzz-secret".to_vec());
    let _ = ShardMap::decode(Some(&secret), "/cluster", data);
    if let Ok(map) = ShardMap::decode(None, "/cluster", data) {
        let again = map.encode(None, "/cluster");
        assert_eq!(ShardMap::decode(None, "/cluster", &again).as_ref(), Ok(&map));
        let signed = map.encode(Some(&secret), "/cluster");
        assert_eq!(ShardMap::decode(Some(&secret), "/cluster", &signed).as_ref(), Ok(&map));
        for key in [&data[..data.len().min(1024)], b"k", &[0xff; 8][..]] {
            assert!(map.chains().contains(&map.chain_of(key)));
        }
    }
});
