//! Tests of the log writer's rotation and of the reader's tail, follow and rotation handling.

use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;

use super::*;

fn check_start(tail: u64, current_len: u64, rotated_len: Option<u64>, expected: Start) {
    let got = plan_start(tail, current_len, rotated_len);
    assert_eq!(got, expected, "tail {tail} of {current_len} + {rotated_len:?}");
}

#[test]
fn plans_where_reading_starts() {
    let at = |rotated, current| Start { rotated, current };
    check_start(0, 10, None, at(None, 0));
    check_start(0, 10, Some(7), at(Some(0), 0));
    check_start(4, 10, None, at(None, 6));
    check_start(4, 10, Some(7), at(None, 6));
    check_start(10, 10, Some(7), at(None, 0));
    check_start(12, 10, Some(7), at(Some(5), 0));
    check_start(100, 10, Some(7), at(Some(0), 0));
    check_start(100, 10, None, at(None, 0));
    check_start(3, 0, Some(7), at(Some(4), 0));
}

fn write_all(dir: &Path, limit: u64, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut writer = LogWriter::open(dir, Stream::Stdout, limit).expect("open log");
    for chunk in chunks {
        writer.write(chunk).expect("write log");
    }
    let read = |name: &str| fs::read(dir.join(name)).unwrap_or_default();
    [read("stdout.log.1"), read("stdout.log")].concat()
}

proptest! {
    #[test]
    fn writer_keeps_the_newest_bytes_within_two_caps(
        limit in 1u64..64,
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..20),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = write_all(dir.path(), limit, &chunks);
        let all = chunks.concat();
        for name in ["stdout.log", "stdout.log.1"] {
            let len = fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
            prop_assert!(len <= limit, "{name} holds {len} bytes, cap {limit}");
        }
        prop_assert!(all.ends_with(&kept));
        prop_assert!(kept.len() as u64 >= limit.min(all.len() as u64));
    }

    #[test]
    fn writer_without_a_cap_keeps_everything(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..20),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        prop_assert_eq!(write_all(dir.path(), 0, &chunks), chunks.concat());
    }
}

#[test]
fn writer_appends_to_an_existing_log_and_rotates_it_first_when_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("stdout.log"), "0123456789").expect("old log");
    let kept = write_all(dir.path(), 10, &[b"ab".to_vec()]);
    assert_eq!(kept, b"0123456789ab");
    assert_eq!(fs::read(dir.path().join("stdout.log")).expect("log"), b"ab");
}

async fn next_text(log: &mut LogStream) -> Option<String> {
    let chunk = tokio::time::timeout(Duration::from_secs(10), log.next())
        .await
        .expect("in time")?;
    Some(String::from_utf8(chunk.expect("chunk").to_vec()).expect("utf-8"))
}

/// Reads from `log` until `expected` bytes have come, which must be exactly `expected`.
async fn expect_text(log: &mut LogStream, expected: &str) {
    let mut seen = String::new();
    while seen.len() < expected.len() {
        seen.push_str(&next_text(log).await.expect("more data"));
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn follows_across_rotations_and_ends_with_the_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = LogWriter::open(dir.path(), Stream::Stdout, 10).expect("open log");
    writer.write(b"0123456789").expect("write");
    let mut log = read(dir.path(), Stream::Stdout, 0, true);
    expect_text(&mut log, "0123456789").await;
    writer.write(b"abc").expect("write, rotating");
    expect_text(&mut log, "abc").await;
    writer.write(b"defghijklm").expect("write, rotating again");
    expect_text(&mut log, "defghijklm").await;
    writer.write(b"nop").expect("write");
    fs::write(dir.path().join(EXIT_FILE), "{}").expect("exit.json");
    expect_text(&mut log, "nop").await;
    assert_eq!(next_text(&mut log).await, None);
}

async fn read_to_end(dir: &Path, tail: u64) -> String {
    let mut log = read(dir, Stream::Stdout, tail, false);
    let mut text = String::new();
    while let Some(chunk) = next_text(&mut log).await {
        text.push_str(&chunk);
    }
    text
}

#[tokio::test]
async fn tails_across_the_rotated_generation() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_all(dir.path(), 10, &[b"0123456789abcde".to_vec()]);
    assert_eq!(read_to_end(dir.path(), 0).await, "0123456789abcde");
    assert_eq!(read_to_end(dir.path(), 3).await, "cde");
    assert_eq!(read_to_end(dir.path(), 7).await, "89abcde");
    assert_eq!(read_to_end(dir.path(), 99).await, "0123456789abcde");
}

#[tokio::test]
async fn a_missing_log_reads_empty_and_a_follower_waits_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = read(dir.path(), Stream::Stderr, 0, false);
    assert_eq!(next_text(&mut log).await, None);

    let mut follower = read(dir.path(), Stream::Stderr, 0, true);
    LogWriter::open(dir.path(), Stream::Stderr, 0)
        .expect("open")
        .write(b"late")
        .expect("write");
    expect_text(&mut follower, "late").await;
}
