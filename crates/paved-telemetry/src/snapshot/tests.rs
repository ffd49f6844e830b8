//! Snapshot round trips, and every kind of bad file refused with a clear error, never a panic.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::catalog::{API_REQUEST_DURATION, API_REQUESTS};
use crate::query::Query;
use crate::registry::Registry;
use crate::time::Timestamp;

const T0: i64 = 1_700_000_000_000;

fn at(step: i64) -> Timestamp {
    Timestamp::from_millis(T0 + step * 10_000)
}

/// A store with counters, a histogram and a float gauge over 500 steps (two sealed blocks and
/// a head).
fn filled() -> Store {
    let store = Store::new(StoreConfig::default()).expect("valid");
    let registry = Registry::new();
    let requests = registry
        .counter(&API_REQUESTS)
        .with(&[("method", "GetJob"), ("status", "ok")]);
    let latency = registry
        .histogram(&API_REQUEST_DURATION)
        .with(&[("method", "GetJob")]);
    let odd = store
        .series("odd_values", &Labels::from_pairs([("k", "v \"quoted\" ✓")]))
        .expect("created");
    for step in 0..500 {
        requests.inc_by(step as u64 % 7);
        latency.observe(0.001 * (1 + step % 13) as f64);
        store.sample(&registry, at(step));
        let v = [f64::NAN, -0.0, f64::INFINITY, 0.1 + 0.2][step as usize % 4];
        store.append(odd, at(step), v).expect("newer");
    }
    store
}

fn everything(store: &Store, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let q = Query::new(*name, at(0), at(600), Duration::from_secs(10));
            format!("{:?}", store.query(&q).expect("runs"))
        })
        .collect()
}

const NAMES: &[&str] = &[
    "paved_api_requests_total",
    "paved_api_request_duration_seconds",
    "paved_api_request_duration_seconds_sum",
    "odd_values",
];

#[test]
fn a_saved_store_loads_back_whole_and_keeps_appending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("telemetry.snapshot");
    let store = filled();
    let stats = store.save(&path).expect("saves");
    assert_eq!(stats.series, store.stats().series);
    assert!(!dir.path().join("telemetry.snapshot.tmp").exists());

    let loaded = Store::load(&path, StoreConfig::default()).expect("loads");
    assert_eq!(everything(&loaded, NAMES), everything(&store, NAMES));
    assert_eq!(loaded.stats().samples, store.stats().samples);

    let series = loaded
        .series("odd_values", &Labels::from_pairs([("k", "v \"quoted\" ✓")]))
        .expect("found");
    assert!(matches!(
        loaded.append(series, at(499), 1.0),
        Err(crate::tsdb::AppendError::NotNewer { .. })
    ));
    loaded
        .append(series, at(500), 1.0)
        .expect("appends after the saved head");
}

#[test]
fn saving_replaces_the_previous_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    Store::new(StoreConfig::default())
        .expect("valid")
        .save(&path)
        .expect("saves empty");
    filled().save(&path).expect("saves again");
    assert!(
        Store::load(&path, StoreConfig::default())
            .expect("loads")
            .stats()
            .series
            > 0
    );
}

/// Loads `bytes` as a snapshot file and returns the error's code.
fn load_bytes(bytes: &[u8]) -> Result<Store, SnapshotError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    fs::write(&path, bytes).expect("writes");
    Store::load(&path, StoreConfig::default())
}

fn code(result: Result<Store, SnapshotError>) -> &'static str {
    result.map(|_| "ok").unwrap_or_else(|e| e.code())
}

fn saved_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    filled().save(&path).expect("saves");
    fs::read(&path).expect("reads")
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    let good = saved_bytes();
    assert_eq!(code(load_bytes(&good)), "ok");
    assert_eq!(code(load_bytes(b"")), "snapshot.foreign");
    assert_eq!(code(load_bytes(b"{\"not\": \"a snapshot\"}")), "snapshot.foreign");
    assert_eq!(code(load_bytes(b"PAVEDTSD")), "snapshot.corrupt");
    for cut in [12, 100, good.len() / 2, good.len() - 1] {
        let err = load_bytes(&good[..cut]).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "snapshot.corrupt", "cut at {cut}");
        assert!(err.to_string().contains("delete it to start empty"), "{err}");
    }
    let mut flipped = good.clone();
    flipped[good.len() / 3] ^= 0x10;
    assert_eq!(code(load_bytes(&flipped)), "snapshot.corrupt");
    let mut future = good.clone();
    future[8] = 2;
    let err = load_bytes(&future).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "snapshot.version");
    assert!(err.to_string().contains("version 2"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = Store::load(&dir.path().join("nope"), StoreConfig::default())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(missing.code(), "snapshot.missing");
}

#[test]
fn a_snapshot_of_another_step_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    filled().save(&path).expect("saves");
    let config = StoreConfig {
        step: Duration::from_secs(15),
        block: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let err = Store::load(&path, config).map(|_| ()).unwrap_err();
    assert_eq!(err.code(), "snapshot.layout");
    assert!(err.to_string().contains("10000ms steps"), "{err}");
}

#[test]
fn the_series_cap_applies_on_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    filled().save(&path).expect("saves");
    let config = StoreConfig {
        max_series_per_metric: 1,
        ..StoreConfig::default()
    };
    let loaded = Store::load(&path, config).expect("loads");
    assert!(loaded.stats().metrics.iter().all(|m| m.series <= 1));
}

/// Replaces the body with `body` and seals it with a right checksum, so damage reaches the
/// parser and the block decoder instead of stopping at the checksum.
fn resealed(good: &[u8], at: usize, byte: u8) -> Vec<u8> {
    let mut bytes = good[..good.len() - 4].to_vec();
    let at = 12 + at % (bytes.len() - 12);
    bytes[at] = byte;
    let sum = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bytes_load_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = load_bytes(&bytes);
    }

    #[test]
    fn damage_behind_a_valid_checksum_fails_cleanly(at in any::<usize>(), byte in any::<u8>()) {
        let good = saved_bytes();
        let _ = load_bytes(&resealed(&good, at, byte));
    }
}
