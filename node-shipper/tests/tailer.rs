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

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8(l.bytes.clone()).unwrap())
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
    assert_eq!(lines[0].source_id, t.generation().unwrap().source_id());
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
    std::fs::copy(&p, d.path().join("policy_action.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
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
        lines[0].source_id,
        cp.generation.source_id(),
        "the same source continues"
    );

    // A checkpoint of a file that has since been replaced does not apply to the new file.
    std::fs::rename(&p, d.path().join("policy_action.log.1")).unwrap();
    append(&p, "n1\n");
    let mut t = FileTailer::new(&p, Some(&cp)).unwrap();
    assert_eq!(texts(&t.poll().unwrap()), ["n1"]);
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
