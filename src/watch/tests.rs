use super::*;
use crate::serialize::Key;

fn key(k: &str) -> Key {
    Key::new(k.as_bytes()).unwrap()
}

fn put(seq: u64, k: &str, v: &str) -> Update {
    Update {
        seq,
        prev_seq: seq - 1,
        op: WriteOp::Put {
            key: key(k),
            value: v.as_bytes().to_vec(),
        },
    }
}

/// A sink that takes `room` frames, then reports itself full.
struct Frames {
    got: Vec<WatchEvent>,
    room: usize,
}

impl Frames {
    fn new(room: usize) -> Frames {
        Frames {
            got: Vec::new(),
            room,
        }
    }
}

impl WatchSink for Frames {
    fn has_room(&self) -> bool {
        self.got.len() < self.room
    }
    fn send(&mut self, event: WatchEvent) {
        self.got.push(event);
    }
}

const MB: usize = 1024 * 1024;

#[test]
fn a_watch_gets_the_committed_changes_under_its_prefix_in_order() {
    let mut h = History::new(0, 64 * MB);
    h.record(&put(1, "a/1", "x"));
    h.record(&put(2, "b/1", "y"));
    h.record(&Update {
        seq: 3,
        prev_seq: 2,
        op: WriteOp::Del { key: key("a/1") },
    });
    h.record(&put(4, "a/2", "z"));
    let (mut w, first) = Watch::open(9, b"a/".to_vec(), 0, &h, 3).unwrap();
    assert_eq!((first.seq, first.changes.len()), (0, 0));
    let mut sink = Frames::new(100);
    // Seq 4 is applied but not committed yet: it waits.
    assert!(!w.pump(&h, 3, 4096, u64::MAX, &mut sink).unwrap());
    let seqs: Vec<u64> = sink.got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 3]);
    assert_eq!(
        sink.got[1].changes,
        vec![WatchChange::Del { key: key("a/1") }]
    );
    w.pump(&h, 4, 4096, u64::MAX, &mut sink).unwrap();
    assert_eq!(sink.got.last().map(|e| e.seq), Some(4));
    assert_eq!(w.after(), 4);
}

#[test]
fn from_now_starts_at_the_horizon_and_an_evicted_start_is_history_gone() {
    let mut h = History::new(0, WATCH_HISTORY_BYTES_MIN);
    let big = "v".repeat(MB);
    for seq in 1..=40 {
        h.record(&put(seq, "k", &big));
    }
    assert!(
        h.floor() > 20,
        "old records were dropped: floor {}",
        h.floor()
    );
    assert!(h.bytes() <= WATCH_HISTORY_BYTES_MIN);
    let gone = Watch::open(1, Vec::new(), 5, &h, 40).unwrap_err();
    assert_eq!(gone, WatchEnd::HistoryGone { floor: h.floor() });
    let (w, first) = Watch::open(1, Vec::new(), WATCH_FROM_NOW, &h, 40).unwrap();
    assert_eq!((first.seq, w.after()), (40, 40));
}

#[test]
fn a_watcher_that_falls_behind_is_cut_off_before_its_history_is_dropped() {
    let mut h = History::new(0, 64 * MB);
    let (mut w, _) = Watch::open(1, Vec::new(), 0, &h, 0).unwrap();
    let value = "v".repeat(1000);
    for seq in 1..=100 {
        h.record(&put(seq, "k", &value));
    }
    let mut full = Frames::new(0);
    let end = w.pump(&h, 100, 4096, 50_000, &mut full).unwrap_err();
    assert!(matches!(end, WatchEnd::TooSlow { lag_bytes } if lag_bytes > 50_000));
    // With room, the same watcher would have been served.
    let (mut w, _) = Watch::open(1, Vec::new(), 0, &h, 0).unwrap();
    let mut sink = Frames::new(1000);
    w.pump(&h, 100, 4096, 200_000, &mut sink).unwrap();
    assert_eq!(sink.got.len(), 100);
}

#[test]
fn a_batch_larger_than_a_frame_is_split_and_an_oversized_put_travels_as_changed() {
    let mut h = History::new(0, 64 * MB);
    let ops = (0..10)
        .map(|i| BatchOp::Put {
            key: key(&format!("k{i}")),
            value: vec![7; 1000],
        })
        .collect();
    h.record(&Update {
        seq: 1,
        prev_seq: 0,
        op: WriteOp::Batch(ops),
    });
    h.record(&put(2, "huge", &"h".repeat(5000)));
    let (mut w, _) = Watch::open(1, Vec::new(), 0, &h, 2).unwrap();
    let mut sink = Frames::new(100);
    w.pump(&h, 2, 4096, u64::MAX, &mut sink).unwrap();
    let of_one: Vec<&WatchEvent> = sink.got.iter().filter(|e| e.seq == 1).collect();
    assert!(of_one.len() > 1, "10 KB of changes in 4 KB frames");
    assert!(of_one[..of_one.len() - 1].iter().all(|e| e.more));
    assert!(!of_one[of_one.len() - 1].more);
    assert_eq!(of_one.iter().map(|e| e.changes.len()).sum::<usize>(), 10);
    for e in &sink.got {
        let mut bytes = Vec::new();
        crate::serialize::Codec::encode(e, &mut bytes);
        assert!(bytes.len() <= 4096, "a frame of {} bytes", bytes.len());
    }
    let last = sink.got.last().unwrap();
    assert_eq!(
        last.changes,
        vec![WatchChange::Changed { key: key("huge") }]
    );
}

#[test]
fn a_quiet_prefix_still_gets_progress_marks_and_a_full_sink_holds_the_cursor() {
    let mut h = History::new(0, WATCH_HISTORY_BYTES_MIN);
    let value = "v".repeat(10_000);
    for seq in 1..=1000 {
        h.record(&put(seq, "other", &value));
    }
    let (mut w, _) = Watch::open(1, b"mine".to_vec(), 0, &h, 1000).unwrap();
    let mut sink = Frames::new(1);
    let more = w.pump(&h, 1000, 4096, u64::MAX, &mut sink).unwrap();
    assert_eq!(sink.got.len(), 1, "a progress mark, then no room");
    assert!(sink.got[0].changes.is_empty() && sink.got[0].seq > 0);
    assert!(more, "records are left for the next pump");
    assert_eq!(w.after(), sink.got[0].seq, "the cursor stopped at the mark");
}
