//! Every `Arbitrary` message survives encode -> decode unchanged.
#![no_main]

use chaintable::wire::{decode_frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|msg: Message| {
    let bytes = msg.to_bytes();
    let (frame, used) = decode_frame(&bytes, usize::MAX)
        .expect("own encoding is a valid frame")
        .expect("own encoding is complete");
    assert_eq!(used, bytes.len());
    assert_eq!(Message::from_frame(&frame).expect("own payload decodes"), msg);
});
