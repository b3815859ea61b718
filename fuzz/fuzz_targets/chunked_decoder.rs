//! The incremental decoder fed a byte stream in arbitrary chunk sizes yields
//! exactly the frames (and the same error) as one-shot decoding of the whole
//! stream, and never holds more than one maximum frame.
#![no_main]

use arbitrary::Arbitrary;
use chaintable::wire::{decode_frame, Frame, FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

const PAYLOAD_MAX: usize = 256;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Whole messages, so that streams are mostly valid.
    messages: Vec<chaintable::wire::Message>,
    /// Raw bytes appended at the end (garbage, partial frames).
    tail: Vec<u8>,
    chunk_sizes: Vec<u8>,
}

fn one_shot(mut stream: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = vec![];
    loop {
        match decode_frame(stream, PAYLOAD_MAX) {
            Ok(Some((f, used))) => {
                frames.push(f);
                stream = &stream[used..];
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fuzz_target!(|input: Input| {
    let mut stream: Vec<u8> = input.messages.iter().flat_map(|m| m.to_bytes()).collect();
    stream.extend_from_slice(&input.tail);
    let expected = one_shot(&stream);

    let mut decoder = FrameDecoder::new(PAYLOAD_MAX);
    let mut frames = vec![];
    let mut error = None;
    let mut rest: &[u8] = &stream;
    let mut sizes = input.chunk_sizes.iter().cycle();
    'outer: while !rest.is_empty() {
        let size = sizes.next().map_or(rest.len(), |s| (*s as usize).max(1));
        let taken = decoder.feed(&rest[..size.min(rest.len())]);
        rest = &rest[taken..];
        assert!(decoder.buffered() <= decoder.bytes_max());
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'outer;
                }
            }
        }
        assert!(taken > 0 || rest.is_empty(), "decoder stalled");
    }
    assert_eq!((frames, error), expected);
});
