//! Property tests of the codecs with seeded random inputs: every arbitrary
//! message survives encode -> decode, random bytes never make the decoders
//! panic or over-claim, and chunked decoding equals one-shot decoding.

#![cfg(feature = "testing")]

use chaintable::wire::message::arbitrary_message;
use chaintable::wire::{decode_frame, FrameDecoder, Message};
use rand::{rngs::StdRng, Rng, RngCore, SeedableRng};

const CASES: usize = 20_000;

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut bytes = vec![0; rng.gen_range(0..max)];
    rng.fill_bytes(&mut bytes);
    bytes
}

#[test]
fn every_arbitrary_message_round_trips() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut built = 0;
    for _ in 0..CASES {
        let seed = random_bytes(&mut rng, 512);
        let Ok(msg) = arbitrary_message(&seed) else {
            continue;
        };
        built += 1;
        let bytes = msg.to_bytes();
        let (frame, used) = decode_frame(&bytes, usize::MAX).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(Message::from_frame(&frame).unwrap(), msg);
    }
    assert!(built > CASES / 2, "only {built} messages were built");
}

#[test]
fn random_bytes_never_panic_or_overclaim() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..CASES {
        let mut bytes = random_bytes(&mut rng, 256);
        // Half the cases start with a valid magic and version to get deeper.
        if rng.gen_bool(0.5) && bytes.len() > 3 {
            bytes[..3].copy_from_slice(&[0x43, 0x54, 0x01]);
        }
        if let Ok(Some((frame, used))) = decode_frame(&bytes, 1 << 16) {
            assert!(used <= bytes.len());
            let _ = Message::from_frame(&frame);
        }
    }
}

#[test]
fn chunked_decoding_equals_one_shot_decoding() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..500 {
        let msgs: Vec<Message> = (0..rng.gen_range(1..20))
            .filter_map(|_| arbitrary_message(&random_bytes(&mut rng, 300)).ok())
            .collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.to_bytes()).collect();
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut out = vec![];
        let mut rest: &[u8] = &stream;
        while !rest.is_empty() {
            let chunk = rng.gen_range(1..=rest.len().min(64));
            let taken = decoder.feed(&rest[..chunk]);
            rest = &rest[taken..];
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(Message::from_frame(&frame).unwrap());
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(decoder.buffered(), 0);
    }
}
