use super::frame::{decode, encode, Decoded, Frame};
use super::*;
use proptest::prelude::*;
use std::path::Path;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        path: dir.join("spend.spool"),
        max_bytes: 64 << 20,
        max_records: 100_000,
    }
}

fn batch(ids: &[&str]) -> Vec<(String, Vec<u8>)> {
    ids.iter()
        .map(|id| {
            (
                id.to_string(),
                format!("{{\"request_id\":\"{id}\"}}").into_bytes(),
            )
        })
        .collect()
}

fn ids(pending: &Pending) -> Vec<String> {
    pending.entries().map(|e| e.id.clone()).collect()
}

fn open(config: &SpoolConfig) -> (Spool, Replay) {
    Spool::open(config.clone()).unwrap()
}

fn file(config: &SpoolConfig) -> Vec<u8> {
    std::fs::read(&config.path).unwrap()
}

fn scanned(bytes: &[u8]) -> Vec<String> {
    ids(&scan(bytes, Path::new("s")).unwrap().pending)
}

#[test]
fn appended_entries_replay_in_order_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, replay) = open(&config);
    assert_eq!(
        replay,
        Replay {
            pending: 0,
            truncated_bytes: 0
        }
    );
    spool.append(batch(&["a", "b"])).unwrap();
    spool.append(batch(&["c"])).unwrap();
    drop(spool);
    let (spool, replay) = open(&config);
    assert_eq!(replay.pending, 3);
    let oldest = spool.oldest(10);
    assert_eq!(
        oldest.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(oldest.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(oldest[2].data, b"{\"request_id\":\"c\"}");
}

#[test]
fn a_pending_id_sent_again_is_a_duplicate_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    assert_eq!(
        spool.append(batch(&["a", "b", "a"])).unwrap(),
        Appended {
            accepted: 2,
            duplicates: 1,
            accepted_ids: ["a", "b"].map(String::from).to_vec(),
        }
    );
    let len = spool.depth().file_bytes;
    assert_eq!(
        spool.append(batch(&["b", "a"])).unwrap(),
        Appended {
            accepted: 0,
            duplicates: 2,
            accepted_ids: vec![],
        }
    );
    assert_eq!(spool.depth().file_bytes, len);
    assert_eq!(
        spool.append(batch(&["b", "c"])).unwrap(),
        Appended {
            accepted: 1,
            duplicates: 1,
            accepted_ids: ["c"].map(String::from).to_vec(),
        }
    );
    assert_eq!(ids(spool.pending()), ["a", "b", "c"]);
}

#[test]
fn drained_entries_are_not_replayed_and_the_file_shrinks_to_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.append(batch(&["a", "b"])).unwrap();
    spool.append(batch(&["c"])).unwrap();
    spool.mark_drained(2).unwrap();
    assert_eq!(ids(spool.pending()), ["c"]);
    drop(spool);
    let (mut spool, _) = open(&config);
    assert_eq!(ids(spool.pending()), ["c"]);
    spool.mark_drained(3).unwrap();
    assert_eq!(
        spool.depth(),
        Depth {
            records: 0,
            file_bytes: MAGIC.len() as u64
        }
    );
    assert_eq!(file(&config), MAGIC);
    // A drained id sent again is spooled again (Postgres keeps it once).
    assert_eq!(spool.append(batch(&["a"])).unwrap().accepted, 1);
    drop(spool);
    assert_eq!(ids(open(&config).0.pending()), ["a"]);
}

#[test]
fn a_watermark_below_every_pending_entry_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.append(batch(&["a"])).unwrap();
    spool.mark_drained(1).unwrap();
    spool.append(batch(&["b"])).unwrap();
    let len = spool.depth().file_bytes;
    spool.mark_drained(1).unwrap();
    assert_eq!(spool.depth().file_bytes, len);
}

/// Every operation of a run, the file after it, and the ids acknowledged as pending.
fn run_with_snapshots(config: &SpoolConfig) -> Vec<(Vec<u8>, Vec<String>)> {
    enum Op {
        Append(&'static [&'static str]),
        Drain(u64),
    }
    let ops = [
        Op::Append(&["r1", "r2"]),
        Op::Append(&["r3"]),
        Op::Append(&["r2", "r4", "r4"]),
        Op::Drain(2),
        Op::Append(&["r5", "r1"]),
        Op::Drain(3),
        Op::Append(&["r6"]),
        Op::Drain(7),
        Op::Append(&["r7", "r8"]),
    ];
    let (mut spool, _) = open(config);
    let mut snapshots = vec![(file(config), ids(spool.pending()))];
    for op in ops {
        match op {
            Op::Append(list) => {
                spool.append(batch(list)).unwrap();
            }
            Op::Drain(through) => spool.mark_drained(through).unwrap(),
        }
        snapshots.push((file(config), ids(spool.pending())));
    }
    snapshots
}

#[test]
fn a_crash_at_every_byte_of_every_write_replays_exactly_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = run_with_snapshots(&config(dir.path()));
    let mut checked = 0;
    for pair in snapshots.windows(2) {
        let [(before, acked_before), (after, acked_after)] = pair else {
            unreachable!()
        };
        assert_eq!(&scanned(after), acked_after);
        if !after.starts_with(before) {
            continue; // a truncation or a rename: the file is one or the other, whole
        }
        for cut in before.len()..after.len() {
            let scan = scan(&after[..cut], Path::new("s")).unwrap();
            assert_eq!(&ids(&scan.pending), acked_before, "cut at {cut}");
            assert_eq!(scan.good_len, before.len(), "cut at {cut}");
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn a_torn_write_is_cut_off_at_open_and_the_spool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.append(batch(&["a"])).unwrap();
    let acked = file(&config);
    spool.append(batch(&["b", "c"])).unwrap();
    let whole = file(&config);
    drop(spool);
    for cut in acked.len()..whole.len() {
        std::fs::write(&config.path, &whole[..cut]).unwrap();
        let (mut spool, replay) = open(&config);
        assert_eq!(ids(spool.pending()), ["a"], "cut at {cut}");
        assert_eq!(replay.truncated_bytes, (cut - acked.len()) as u64);
        assert_eq!(file(&config), acked);
        spool.append(batch(&["c", "d"])).unwrap();
        drop(spool);
        assert_eq!(
            ids(open(&config).0.pending()),
            ["a", "c", "d"],
            "cut at {cut}"
        );
    }
}

#[test]
fn a_header_torn_at_creation_starts_an_empty_spool() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    for cut in 0..MAGIC.len() {
        std::fs::write(&config.path, &MAGIC[..cut]).unwrap();
        let (spool, replay) = open(&config);
        assert_eq!(
            replay,
            Replay {
                pending: 0,
                truncated_bytes: cut as u64
            }
        );
        assert_eq!(spool.depth().file_bytes, MAGIC.len() as u64);
        assert_eq!(file(&config), MAGIC);
    }
}

#[test]
fn a_file_that_is_not_a_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::write(&config.path, b"{\"hello\": 1}").unwrap();
    assert!(matches!(
        Spool::open(config),
        Err(SpoolError::NotASpool { .. })
    ));
}

#[test]
fn damage_far_from_the_end_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.append(batch(&["first"])).unwrap();
    let big = vec![b'x'; 600 << 10];
    spool.append(vec![("big-1".into(), big.clone())]).unwrap();
    spool.append(vec![("big-2".into(), big)]).unwrap();
    drop(spool);
    let mut bytes = file(&config);
    bytes[MAGIC.len() + FRAME_HEADER + 2] ^= 0xff; // inside the first frame
    std::fs::write(&config.path, &bytes).unwrap();
    assert!(matches!(
        Spool::open(config.clone()),
        Err(SpoolError::Corrupt { offset: 8, .. })
    ));
    assert_eq!(file(&config), bytes, "the file is left for the operator");
}

#[test]
fn a_leftover_compaction_file_is_removed_and_the_spool_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.append(batch(&["a"])).unwrap();
    drop(spool);
    std::fs::write(temp_path(&config.path), &MAGIC[..5]).unwrap();
    let (spool, _) = open(&config);
    assert_eq!(ids(spool.pending()), ["a"]);
    assert!(!temp_path(&config.path).exists());
}

#[test]
fn the_record_bound_refuses_a_batch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_records: 3,
        ..config(dir.path())
    };
    let (mut spool, _) = open(&config);
    spool.append(batch(&["a", "b"])).unwrap();
    assert!(matches!(
        spool.append(batch(&["c", "d"])),
        Err(SpoolError::Full { records: 2, .. })
    ));
    assert_eq!(spool.append(batch(&["c", "a"])).unwrap().accepted, 1);
    spool.mark_drained(1).unwrap();
    assert_eq!(spool.append(batch(&["d"])).unwrap().accepted, 1);
    drop(spool);
    assert_eq!(ids(open(&config).0.pending()), ["b", "c", "d"]);
}

#[test]
fn the_byte_bound_compacts_drained_entries_before_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_bytes: 3000,
        ..config(dir.path())
    };
    let (mut spool, _) = open(&config);
    let record = |id: &str| vec![(id.to_string(), vec![b'r'; 900])];
    spool.append(record("a")).unwrap();
    spool.append(record("b")).unwrap();
    spool.append(record("c")).unwrap();
    assert!(matches!(
        spool.append(record("d")),
        Err(SpoolError::Full { .. })
    ));
    spool.mark_drained(1).unwrap(); // "a" drained: not yet worth compacting
    assert!(spool.depth().file_bytes > 2700);
    spool.append(record("d")).unwrap(); // compacts "a" away to make room
    assert!(spool.depth().file_bytes < 3000);
    assert!(!temp_path(&config.path).exists());
    drop(spool);
    assert_eq!(ids(open(&config).0.pending()), ["b", "c", "d"]);
}

#[test]
fn drained_entries_are_compacted_once_they_outweigh_pending_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    for i in 0..20 {
        spool
            .append(vec![(format!("big-{i}"), vec![b'x'; 100 << 10])])
            .unwrap();
    }
    spool.append(batch(&["small"])).unwrap();
    spool.mark_drained(20).unwrap();
    assert!(spool.depth().file_bytes < 200, "{:?}", spool.depth());
    spool.append(batch(&["after"])).unwrap();
    let oldest = spool.oldest(5);
    drop(spool);
    let (spool, _) = open(&config);
    assert_eq!(spool.oldest(5), oldest);
    assert_eq!(ids(spool.pending()), ["small", "after"]);
    assert_eq!(oldest.iter().map(|e| e.seq).collect::<Vec<_>>(), [21, 22]);
}

#[test]
fn bad_ids_and_oversized_batches_are_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    assert!(matches!(spool.append(batch(&[""])), Err(SpoolError::BadId)));
    let long = "x".repeat(MAX_ID_LEN + 1);
    assert!(matches!(
        spool.append(batch(&[&long])),
        Err(SpoolError::BadId)
    ));
    assert!(matches!(
        spool.append(vec![("big".into(), vec![0; MAX_FRAME_BYTES])]),
        Err(SpoolError::BatchTooLarge)
    ));
    assert_eq!(file(&config), MAGIC);
    assert_eq!(spool.append(batch(&["ok"])).unwrap().accepted, 1);
}

#[tokio::test]
async fn the_async_handle_appends_drains_and_publishes_its_depth() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (spool, replay) = SpoolHandle::open(config.clone()).await.unwrap();
    assert_eq!(replay.pending, 0);
    let appended = spool.append(batch(&["a", "b"])).await.unwrap();
    assert_eq!(
        appended,
        Appended {
            accepted: 2,
            duplicates: 0,
            accepted_ids: vec!["a".to_string(), "b".to_string()],
        }
    );
    assert_eq!(spool.depth().records, 2);
    let oldest = spool.oldest(1).await.unwrap();
    assert_eq!(oldest[0].id, "a");
    spool.mark_drained(oldest[0].seq).await.unwrap();
    assert_eq!(spool.depth().records, 1);
    drop(spool);
    let (spool, replay) = SpoolHandle::open(config).await.unwrap();
    assert_eq!(replay.pending, 1);
    assert_eq!(spool.depth().records, 1);
    assert_eq!(spool.oldest(9).await.unwrap()[0].id, "b");
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        "[a-z0-9-]{1,40}",
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(seq, id, data)| Entry { seq, id, data })
}

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(entry(), 0..5).prop_map(Frame::Batch),
        any::<u64>().prop_map(|through| Frame::Drained { through }),
    ]
}

proptest! {
    #[test]
    fn a_frame_reads_back_and_no_prefix_of_it_reads_as_a_frame(frame in any_frame()) {
        let bytes = encode(&frame);
        prop_assert_eq!(decode(&bytes), Decoded::Frame(frame, bytes.len()));
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut]), Decoded::Torn);
        }
    }

    #[test]
    fn a_flipped_bit_is_never_read_as_a_frame(frame in any_frame(), at in any::<prop::sample::Index>(), bit in 0..8u8) {
        let mut bytes = encode(&frame);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        // A flip in the length may still leave a valid frame only by a checksum collision.
        prop_assert_eq!(decode(&bytes), Decoded::Torn);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&bytes);
        let _ = scan(&file, Path::new("s"));
    }
}

#[test]
fn the_database_identity_round_trips_through_the_header_and_survives_drain_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    assert_eq!(spool.pending().identity(), None, "a new spool is unbound");
    spool.append(batch(&["a", "b"])).unwrap();
    spool.set_identity("ledger/0123abcd").unwrap();
    let bytes = file(&config);
    // The identity frame comes right after the magic, before any entry.
    let Decoded::Frame(Frame::Identity { database }, _) = decode(&bytes[MAGIC.len()..]) else {
        panic!("no identity frame at the head");
    };
    assert_eq!(database, "ledger/0123abcd");
    drop(spool);
    let (mut spool, replay) = open(&config);
    assert_eq!(replay.pending, 2);
    assert_eq!(spool.pending().identity(), Some("ledger/0123abcd"));
    let last = spool.pending().entries().last().unwrap().seq;
    spool.mark_drained(last).unwrap();
    drop(spool);
    let (spool, _) = open(&config);
    assert_eq!(
        spool.pending().identity(),
        Some("ledger/0123abcd"),
        "truncated to its header, still bound"
    );
    assert_eq!(
        encode(&Frame::Identity {
            database: "x".into()
        }),
        {
            let body = [3u8, 1, 0, b'x'];
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend(crc32fast::hash(&body).to_le_bytes());
            f.extend(body);
            f
        }
    );
}

#[test]
fn setting_aside_renames_the_file_with_its_identity_and_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.set_identity("db a/1").unwrap();
    spool.append(batch(&["a", "b", "c"])).unwrap();
    let (aside, records) = spool.set_aside(42).unwrap();
    assert_eq!(records, 3);
    assert_eq!(aside, dir.path().join("spend.spool.db-db_a_1.42"));
    assert!(aside.starts_with(dir.path()));
    assert_eq!(spool.pending().len(), 0, "a fresh spool");
    assert_eq!(spool.pending().identity(), None);
    let kept = inspect(&aside).unwrap();
    assert_eq!(kept.identity(), Some("db a/1"));
    assert_eq!(ids(&kept), ["a", "b", "c"], "nothing lost, nothing deleted");
    spool.set_identity("db b/2").unwrap();
    spool.append(batch(&["d"])).unwrap();
    drop(spool);
    let (spool, _) = open(&config);
    assert_eq!(ids(spool.pending()), ["d"]);
    assert_eq!(spool.pending().identity(), Some("db b/2"));
}

#[test]
fn an_empty_spool_is_unbound_but_one_with_records_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (mut spool, _) = open(&config);
    spool.set_identity("a/1").unwrap();
    spool.append(batch(&["a"])).unwrap();
    spool.unbind_if_empty().unwrap();
    assert_eq!(spool.pending().identity(), Some("a/1"));
    spool
        .mark_drained(spool.pending().entries().last().unwrap().seq)
        .unwrap();
    spool.unbind_if_empty().unwrap();
    assert_eq!(spool.pending().identity(), None);
    drop(spool);
    assert_eq!(open(&config).0.pending().identity(), None);
}
