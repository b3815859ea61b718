//! Arbitrary bytes into the frame and message decoders: no panic, and a
//! decoded frame never claims more bytes than it was given; a frame that
//! decodes re-encodes to exactly the bytes it came from (reserved bytes
//! aside), so nothing is silently dropped.
#![no_main]

use chaintable::wire::{decode_frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = decode_frame(data, 1 << 20) {
        assert!(used <= data.len());
        let mut again = frame.to_bytes();
        // Reserved header bytes are ignored on receive and zero on send.
        again[6..8].copy_from_slice(&data[6..8]);
        if data[6..8] == [0, 0] {
            assert_eq!(again, data[..used]);
        }
        if let Ok(msg) = Message::from_frame(&frame) {
            // A decoded message re-encodes to a frame that decodes to it.
            let bytes = msg.to_bytes();
            let (f2, _) = decode_frame(&bytes, usize::MAX).unwrap().unwrap();
            assert_eq!(Message::from_frame(&f2).unwrap(), msg);
        }
    }
});
