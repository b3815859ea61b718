//! A server's connection handling driven without a network: any sequence
//! of frames (client, peer and reply opcodes alike, well-formed or not) and
//! raw bytes, in any state of the connection (before HELLO, after it,
//! after a stream error), with the client reading its replies or not. The
//! server must never panic and never pass a bound: input held, frame size
//! before the handshake, queued output, requests in flight, Sent.
#![no_main]

use arbitrary::Arbitrary;
use chaintable::server::harness::ConnHarness;
use chaintable::wire::Message;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    /// A whole frame; `drain`: the client reads what it was sent.
    Frame { msg: Message, drain: bool },
    /// A client HELLO, so that later steps reach the ready state.
    Hello,
    /// Raw bytes: garbage, partial frames, frames with bad CRCs.
    Raw { bytes: Vec<u8>, drain: bool },
}

fuzz_target!(|steps: Vec<Step>| {
    let Ok(mut h) = ConnHarness::new(ConnHarness::small_config()) else {
        return;
    };
    for step in steps.into_iter().take(64) {
        let (bytes, drain) = match step {
            Step::Frame { msg, drain } => (msg.to_bytes(), drain),
            Step::Hello => (ConnHarness::hello_frame(), true),
            Step::Raw { bytes, drain } => (bytes, drain),
        };
        h.step(&bytes, drain);
        if let Err(why) = h.check_bounds() {
            panic!("bound passed: {why}");
        }
        if !h.open() {
            break;
        }
    }
});
