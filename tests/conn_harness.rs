//! The server's connection handling without a network (the harness the
//! `server_conn` fuzz target uses), driven here by seeded random sequences
//! so that the default test run exercises it too: frames of every opcode
//! and raw garbage, in every connection state, with a client that reads or
//! does not. No panic, and no bound passed after any step.

#![cfg(feature = "testing")]

use chaintable::serialize::Key;
use chaintable::server::harness::ConnHarness;
use chaintable::wire::message::arbitrary_message;
use chaintable::wire::{Body, Message, WriteMode};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn config() -> chaintable::server::ServerConfig {
    ConnHarness::small_config()
}

fn hello() -> Vec<u8> {
    ConnHarness::hello_frame()
}

/// A step of one of the kinds the fuzz target makes.
fn random_step(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0 => hello(),
        1..=3 => {
            // Requests that produce large replies or wait for the worker.
            let key = Key::new(format!("k{}", rng.gen_range(0..4))).unwrap();
            let body = match rng.gen_range(0..4) {
                0 => Body::Put {
                    key,
                    value: vec![7; rng.gen_range(0..60_000)],
                    mode: if rng.gen_bool(0.5) {
                        WriteMode::Sync
                    } else {
                        WriteMode::Async
                    },
                },
                1 => Body::GetTable,
                _ => Body::Get { key },
            };
            Message::new(rng.gen(), body).to_bytes()
        }
        4..=7 => {
            let seed: Vec<u8> = (0..rng.gen_range(8..400)).map(|_| rng.gen()).collect();
            match arbitrary_message(&seed) {
                Ok(m) => m.to_bytes(),
                Err(_) => seed,
            }
        }
        _ => (0..rng.gen_range(0..100)).map(|_| rng.gen()).collect(),
    }
}

#[test]
fn random_sequences_never_panic_nor_pass_a_bound() {
    let mut steps_run = 0;
    let mut stayed_open = 0;
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = ConnHarness::new(config()).expect("harness");
        let begin_with_hello = rng.gen_bool(0.7);
        if begin_with_hello {
            h.step(&hello(), true);
        }
        for _ in 0..40 {
            let bytes = random_step(&mut rng);
            let drain = rng.gen_bool(0.7);
            h.step(&bytes, drain);
            steps_run += 1;
            if let Err(why) = h.check_bounds() {
                panic!("seed {seed}: bound passed: {why}");
            }
            if !h.open() {
                break;
            }
        }
        stayed_open += u32::from(h.open());
    }
    eprintln!("{steps_run} steps; {stayed_open} of 300 connections still open at the end");
    assert!(
        steps_run > 1000,
        "sequences ended too early to mean anything"
    );
    assert!(
        stayed_open > 0 && stayed_open < 300,
        "every connection lived or every one died"
    );
}

/// A client that never reads: the harness must see reading stop at the
/// output budget (the bound is checked, not just assumed).
#[test]
fn a_client_that_never_reads_stops_being_read_at_its_budget() {
    let mut h = ConnHarness::new(config()).expect("harness");
    h.step(&hello(), true);
    let put = Message::new(
        2,
        Body::Put {
            key: Key::new("big").unwrap(),
            value: vec![1; 60_000],
            mode: WriteMode::Sync,
        },
    );
    h.step(&put.to_bytes(), true);
    // The worker thread executes the PUT; its reply must not hold the
    // GETs back (that would be the inflight limit, not the budget).
    h.settle(std::time::Duration::from_secs(5));
    for i in 0..400u64 {
        let get = Message::new(
            10 + i,
            Body::Get {
                key: Key::new("big").unwrap(),
            },
        );
        h.step(&get.to_bytes(), false);
        h.check_bounds().expect("within bounds");
    }
    assert!(h.open());
    // 400 GETs of 60 KB would be 24 MB of replies: once the budget (and the
    // kernel's buffers) are full, requests wait unread in the decoder.
    let (held_in, queued_out) = h.held();
    eprintln!("requests held: {held_in} bytes; replies queued: {queued_out} bytes");
    assert!(
        held_in > 100 * 29,
        "the server kept reading: nothing pushed back ({})",
        h.describe()
    );
    assert!(
        queued_out > 128 * 1024,
        "held back by something other than the budget: {}",
        h.describe()
    );
    assert!(queued_out <= 128 * 1024 + 24 + 64 * 1024);
}
