//! The tailer follows a log across rename and copy-truncate rotations without losing or
//! repeating a line, and resumes from checkpoints.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use verdict_shipper::tailer::{FileTailer, Line, load_checkpoint, save_checkpoint};

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A copy-truncate rotation (logrotate's `copytruncate`): the file is copied to `.1`, then
/// emptied in place.
fn copy_truncate(path: &Path, dir: &Path) {
    std::fs::copy(path, dir.join("policy_action.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8(l.bytes.to_vec()).unwrap())
        .collect()
}

#[test]
fn sequences_are_offsets_and_partial_lines_wait() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "one\ntwo\nthr");
    let mut t = FileTailer::new(&p, None).unwrap();
    let lines = t.poll().unwrap();
    assert_eq!(texts(&lines), ["one", "two"]);
    assert_eq!(lines.iter().map(|l| l.sequence).collect::<Vec<_>>(), [4, 8]);
    assert!(
        t.poll().unwrap().is_empty(),
        "the partial line waits for its newline"
    );
    append(&p, "ee\n");
    let lines = t.poll().unwrap();
    assert_eq!(texts(&lines), ["three"]);
    assert_eq!(lines[0].sequence, 14);
    assert_eq!(&*lines[0].source_id, t.generation().unwrap().source_id());
}

#[test]
fn rename_rotation_drains_the_old_file_first() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "a1\na2\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    let first = t.poll().unwrap();
    let old_id = first[0].source_id.clone();
    // The writer rotates: rename, keeps writing to its open handle a moment, then a new file.
    let mut old_handle = OpenOptions::new().append(true).open(&p).unwrap();
    std::fs::rename(&p, d.path().join("policy_action.log.1")).unwrap();
    old_handle.write_all(b"a3 late\n").unwrap();
    append(&p, "b1\nb2\n");
    let lines = t.poll().unwrap();
    assert_eq!(
        texts(&lines),
        ["a3 late", "b1", "b2"],
        "nothing lost, old file first"
    );
    assert_eq!(lines[0].source_id, old_id);
    assert_eq!(lines[0].sequence, 14);
    assert_ne!(
        lines[1].source_id, old_id,
        "a new generation is a new source"
    );
    assert_eq!(
        (lines[1].sequence, lines[2].sequence),
        (3, 6),
        "sequences restart with the new source"
    );
    assert!(t.poll().unwrap().is_empty(), "nothing twice");
}

#[test]
fn copy_truncate_starts_a_new_generation() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "x1\nx2\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    let before = t.poll().unwrap();
    copy_truncate(&p, d.path());
    append(&p, "y1\n");
    let after = t.poll().unwrap();
    assert_eq!(texts(&after), ["y1"]);
    assert_eq!(after[0].sequence, 3);
    assert_ne!(
        after[0].source_id, before[0].source_id,
        "same inode, new generation, new source id"
    );
    assert_eq!(t.generation().unwrap().counter, 1);
}

#[test]
fn checkpoints_resume_after_the_acknowledged_line_only() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    let cp_path = d.path().join("checkpoint.json");
    append(&p, "l1\nl2\nl3\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    let lines = t.poll().unwrap();
    // Only l1 and l2 were acknowledged before the shipper died.
    save_checkpoint(&cp_path, &t.checkpoint_at(lines[1].sequence).unwrap()).unwrap();
    drop(t);
    append(&p, "l4\n");
    let cp = load_checkpoint(&cp_path).unwrap().unwrap();
    let mut t = FileTailer::new(&p, Some(&cp)).unwrap();
    let lines = t.poll().unwrap();
    assert_eq!(texts(&lines), ["l3", "l4"]);
    assert_eq!(
        &*lines[0].source_id,
        cp.generation.source_id(),
        "the same source continues"
    );

    // Rotated while the shipper was down: the checkpointed generation is finished from
    // NAME.1 (l3, l4 were never acknowledged), then the new file starts.
    std::fs::rename(&p, d.path().join("policy_action.log.1")).unwrap();
    append(&p, "n1\n");
    let mut t = FileTailer::new(&p, Some(&cp)).unwrap();
    let lines = t.poll().unwrap();
    assert_eq!(texts(&lines), ["l3", "l4", "n1"]);
    assert_eq!(&*lines[0].source_id, cp.generation.source_id());
    assert_ne!(&*lines[2].source_id, cp.generation.source_id());

    // A checkpoint whose generation is gone altogether does not apply to the new file.
    std::fs::remove_file(d.path().join("policy_action.log.1")).unwrap();
    let mut t = FileTailer::new(&p, Some(&cp)).unwrap();
    assert_eq!(texts(&t.poll().unwrap()), ["n1"]);
    assert_eq!(t.unaccounted_rotations, 1, "the lost generation is counted");
    assert!(
        load_checkpoint(&d.path().join("none.json"))
            .unwrap()
            .is_none()
    );
    std::fs::write(&cp_path, "garbage").unwrap();
    let e = load_checkpoint(&cp_path).unwrap_err().to_string();
    assert!(e.contains("checkpoint.json"), "{e}");
}

#[test]
fn a_missing_file_is_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    let mut t = FileTailer::new(&p, None).unwrap();
    assert!(t.poll().unwrap().is_empty());
    append(&p, "first\n");
    assert_eq!(texts(&t.poll().unwrap()), ["first"]);
}

/// GKE-style rotation as the probe does it: NAME.k → NAME.k+1, NAME → NAME.1, new NAME.
fn rotate(dir: &Path, keep: usize) {
    let p = dir.join("policy_action.log");
    for k in (1..keep).rev() {
        let from = dir.join(format!("policy_action.log.{k}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("policy_action.log.{}", k + 1))).unwrap();
        }
    }
    std::fs::rename(&p, dir.join("policy_action.log.1")).unwrap();
}

#[test]
fn several_rotations_between_polls_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "g1-a\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    assert_eq!(texts(&t.poll().unwrap()), ["g1-a"]);
    append(&p, "g1-b\n");
    rotate(d.path(), 5);
    append(&p, "g2-a\n");
    rotate(d.path(), 5);
    append(&p, "g3-a\npartial");
    let lines = t.poll().unwrap();
    assert_eq!(
        texts(&lines),
        ["g1-b", "g2-a", "g3-a"],
        "oldest first, each once"
    );
    let ids: std::collections::BTreeSet<_> = lines.iter().map(|l| l.source_id.clone()).collect();
    assert_eq!(ids.len(), 3, "three generations, three sources");
    append(&p, " line\n");
    assert_eq!(texts(&t.poll().unwrap()), ["partial line"]);
    assert_eq!(t.unaccounted_rotations, 0);
}

#[test]
fn copy_truncate_reads_unread_lines_from_the_copy() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "c1\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    let first = t.poll().unwrap();
    append(&p, "c2\nc3\n"); // written, not read yet
    copy_truncate(&p, d.path());
    append(&p, "d1\n");
    let lines = t.poll().unwrap();
    assert_eq!(texts(&lines), ["c2", "c3", "d1"]);
    assert_eq!(
        lines[0].source_id, first[0].source_id,
        "the copy continues the old source"
    );
    assert_eq!(lines[1].sequence, 9);
    assert_ne!(lines[2].source_id, first[0].source_id);
    assert_eq!(lines[2].sequence, 3);
}

#[test]
fn reads_are_bounded_and_long_lines_are_cut_and_marked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    let long = "x".repeat(5000);
    append(&p, &format!("{long}\nshort\n"));
    let mut t = FileTailer::new(&p, None).unwrap().with_max_line_bytes(100);
    let lines = t.poll().unwrap();
    assert!(lines[0].truncated);
    assert_eq!(lines[0].bytes.len(), 100);
    assert_eq!(lines[0].sequence, 5001, "the offset counts the whole line");
    assert_eq!((lines[1].start, lines[1].sequence), (5001, 5007));
    assert!(!lines[1].truncated);

    let big: String = (0..100_000).map(|i| format!("{i:07}\n")).collect();
    let p2 = d.path().join("big.log");
    append(&p2, &big);
    let mut t = FileTailer::new(&p2, None).unwrap();
    let mut n = 0;
    let mut polls = 0;
    loop {
        let got = t.poll_up_to(64 * 1024).unwrap();
        if got.is_empty() {
            break;
        }
        assert!(
            got.len() * 8 <= 256 * 1024 + 8,
            "one read at most: {}",
            got.len()
        );
        n += got.len();
        polls += 1;
    }
    assert_eq!(n, 100_000);
    assert!(polls >= 3, "{polls}");
}

#[test]
fn interleaved_writes_rotations_and_polls_lose_and_repeat_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    let mut t = FileTailer::new(&p, None).unwrap();
    let mut got: Vec<String> = Vec::new();
    let mut size = 0;
    let mut seen_sources = std::collections::BTreeMap::<String, u64>::new();
    let mut check = |lines: Vec<Line>, got: &mut Vec<String>| {
        for l in lines {
            let last = seen_sources.entry(l.source_id.to_string()).or_insert(0);
            assert!(l.sequence > *last, "sequences increase within a source");
            *last = l.sequence;
            got.push(String::from_utf8(l.bytes.to_vec()).unwrap());
        }
    };
    for i in 0..3000u32 {
        let line = format!(
            "{{\"n\":{i},\"pad\":\"{}\"}}\n",
            "p".repeat((i % 40) as usize)
        );
        if size + line.len() > 2000 {
            if i % 7 == 0 {
                // copy-truncate
                for k in (1..5).rev() {
                    let from = d.path().join(format!("policy_action.log.{k}"));
                    if from.exists() {
                        std::fs::rename(
                            &from,
                            d.path().join(format!("policy_action.log.{}", k + 1)),
                        )
                        .unwrap();
                    }
                }
                copy_truncate(&p, d.path());
            } else {
                rotate(d.path(), 5);
            }
            size = 0;
        }
        append(&p, &line);
        size += line.len();
        if i % 13 == 0 {
            check(t.poll().unwrap(), &mut got);
        }
    }
    check(t.poll().unwrap(), &mut got);
    let expected: Vec<String> = (0..3000u32)
        .map(|i| {
            format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}",
                "p".repeat((i % 40) as usize)
            )
        })
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !got.contains(e))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "missing (first 5): {missing:?}; got {}",
        got.len()
    );
    assert_eq!(got, expected);
    assert_eq!(t.unaccounted_rotations, 0);
}

#[test]
fn a_writer_rotating_concurrently_with_polls_loses_and_repeats_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    const N: u32 = 20_000;
    let dir = d.path().to_owned();
    let mut t = FileTailer::new(&p, None).unwrap();
    append(&p, "first\n");
    assert_eq!(texts(&t.poll().unwrap()), ["first"]);
    // ~330 lines per generation, 5 kept. The writer never gets more than three generations
    // ahead of the reader (however slow a loaded machine makes it), so nothing may be lost;
    // within that it rotates whenever it likes, racing the reader's polls.
    let read = Arc::new(AtomicUsize::new(0));
    let read_w = Arc::clone(&read);
    let writer = std::thread::spawn(move || {
        let p = dir.join("policy_action.log");
        let mut size = 0;
        for i in 0..N {
            let line = format!("line {i:06}\n");
            if size + line.len() > 4000 {
                while (i as usize).saturating_sub(read_w.load(Ordering::Relaxed)) > 1000 {
                    std::thread::yield_now();
                }
                rotate(&dir, 5);
                size = 0;
            }
            append(&p, &line);
            size += line.len();
        }
    });
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        got.extend(texts(&t.poll_up_to(4096).unwrap()));
        read.store(got.len(), Ordering::Relaxed);
    }
    writer.join().unwrap();
    got.extend(texts(&t.poll().unwrap()));
    let expected: Vec<String> = (0..N).map(|i| format!("line {i:06}")).collect();
    if got != expected {
        let set: std::collections::HashSet<&String> = got.iter().collect();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for (i, e) in expected.iter().enumerate() {
            if !set.contains(e) {
                match ranges.last_mut() {
                    Some(r) if r.1 + 1 == i => r.1 = i,
                    _ => ranges.push((i, i)),
                }
            }
        }
        panic!(
            "got {} of {N} lines; unaccounted rotations {}; missing ranges {ranges:?}",
            got.len(),
            t.unaccounted_rotations
        );
    }
    assert_eq!(t.unaccounted_rotations, 0);
}

#[test]
fn copy_truncate_racing_the_reader_loses_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for round in 0..20 {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("policy_action.log");
        let mut t = FileTailer::new(&p, None).unwrap();
        append(&p, "l0000\n");
        assert_eq!(texts(&t.poll().unwrap()), ["l0000"]);
        let stop = Arc::new(AtomicBool::new(false));
        let dir = d.path().to_owned();
        let stop_w = Arc::clone(&stop);
        let writer = std::thread::spawn(move || {
            let p = dir.join("policy_action.log");
            for i in 1..400 {
                if i == 200 {
                    copy_truncate(&p, &dir);
                }
                append(&p, &format!("l{i:04}\n"));
            }
            stop_w.store(true, Ordering::Relaxed);
        });
        let mut got = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            got.extend(texts(&t.poll_up_to(64).unwrap()));
        }
        writer.join().unwrap();
        got.extend(texts(&t.poll().unwrap()));
        let expected: Vec<String> = (1..400).map(|i| format!("l{i:04}")).collect();
        assert_eq!(got, expected, "round {round}");
    }
}

#[test]
fn a_fresh_start_can_read_the_rotated_backlog_first() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("policy_action.log");
    append(&p, "old-1\n");
    rotate(d.path(), 5);
    append(&p, "old-2\n");
    rotate(d.path(), 5);
    append(&p, "live\n");
    let mut t = FileTailer::new(&p, None).unwrap();
    assert_eq!(
        texts(&t.poll().unwrap()),
        ["live"],
        "by default only the live file"
    );
    let mut t = FileTailer::new(&p, None)
        .unwrap()
        .with_rotated_backlog()
        .unwrap();
    assert_eq!(texts(&t.poll().unwrap()), ["old-1", "old-2", "live"]);
}
