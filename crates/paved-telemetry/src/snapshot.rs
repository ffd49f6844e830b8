//! Snapshots: the whole store in one file, written on clean shutdown and read back at start. A
//! crash loses what was sampled since the last snapshot, by design.
//!
//! The file is written to `<path>.tmp`, fsynced, renamed over `path`, and the directory fsynced,
//! so `path` always holds a whole snapshot, old or new. Layout, little-endian:
//!
//! ```text
//! "PAVEDTSD" | version u32 | body | CRC-32 (IEEE) of everything before it, u32
//! body   = step_ms u64 | block_steps u64 | series count u64 | series*
//! series = metric str | tag count u32 | (key str, value str)* | block count u32 | block*
//! block  = number u64 | start u16 | samples u16 | len_bits u32 | word count u32 | word u64*
//! str    = byte length u32 | UTF-8
//! ```
//!
//! The last block of each series is its head; it is re-encoded on load so appends continue in it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::labels::Labels;
use crate::tsdb::series::{Block, SeriesData};
use crate::tsdb::{ConfigError, Store, StoreConfig};

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    pub series: usize,
    pub bytes: u64,
}

/// Why a snapshot could not be written or read. When loading fails, start with an empty store:
/// history is telemetry, not state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no telemetry snapshot at {path}; starting empty")]
    Missing { path: PathBuf },
    #[error("cannot read telemetry snapshot {path}: {source}; check its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write telemetry snapshot {path}: {source}; check free space and permissions")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a paved telemetry snapshot; move it away or delete it")]
    Foreign { path: PathBuf },
    #[error(
        "telemetry snapshot {path} has format version {found} but this paved reads version {supported}; delete it to start empty"
    )]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("telemetry snapshot {path} is damaged ({reason}); delete it to start empty")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "telemetry snapshot {path} holds {file_step_ms}ms steps in blocks of {file_block_steps}, but the store is configured for {step_ms}ms in blocks of {block_steps}; restore those settings or delete the snapshot"
    )]
    Layout {
        path: PathBuf,
        file_step_ms: u64,
        file_block_steps: u64,
        step_ms: u64,
        block_steps: u64,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl SnapshotError {
    /// A stable identifier for logs and alerts; never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::Missing { .. } => "snapshot.missing",
            SnapshotError::Read { .. } => "snapshot.read",
            SnapshotError::Write { .. } => "snapshot.write",
            SnapshotError::Foreign { .. } => "snapshot.foreign",
            SnapshotError::Version { .. } => "snapshot.version",
            SnapshotError::Corrupt { .. } => "snapshot.corrupt",
            SnapshotError::Layout { .. } => "snapshot.layout",
            SnapshotError::Config(_) => "snapshot.config",
        }
    }

    /// Whether the same call may succeed if made again unchanged (a passing I/O problem).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SnapshotError::Read { .. } | SnapshotError::Write { .. })
    }
}

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"PAVEDTSD";

impl Store {
    /// Writes every series to `path`, atomically. Appends may go on meanwhile; each series is
    /// copied as it stands when its shard is visited.
    pub fn save(&self, path: &Path) -> Result<SnapshotStats, SnapshotError> {
        let series = self.dump();
        let bytes = encode(self, &series);
        write_atomically(path, &bytes).map_err(|source| SnapshotError::Write {
            path: path.to_owned(),
            source,
        })?;
        Ok(SnapshotStats {
            series: series.len(),
            bytes: bytes.len() as u64,
        })
    }

    /// A store configured by `config` holding the series saved at `path` (those beyond the
    /// series cap are left out). Samples older than the retention go at the first
    /// [`Store::sample`] or [`Store::evict`].
    pub fn load(path: &Path, config: StoreConfig) -> Result<Store, SnapshotError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => SnapshotError::Missing {
                path: path.to_owned(),
            },
            _ => SnapshotError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        let store = Store::new(config)?;
        let body = check_envelope(path, &bytes)?;
        decode(&store, path, body)?;
        Ok(store)
    }
}

/// The body, once magic, version and checksum are right.
fn check_envelope<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], SnapshotError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Foreign {
            path: path.to_owned(),
        });
    }
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < MAGIC.len() + 8 {
        return Err(corrupt("shorter than its header"));
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != VERSION {
        return Err(SnapshotError::Version {
            path: path.to_owned(),
            found,
            supported: VERSION,
        });
    }
    let (content, sum) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(content).to_le_bytes() != sum {
        return Err(corrupt(
            "checksum mismatch: the file is truncated or was overwritten",
        ));
    }
    Ok(&content[MAGIC.len() + 4..])
}

fn encode(store: &Store, series: &[(Arc<str>, Arc<Labels>, Vec<Block>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, VERSION);
    put_u64(&mut out, store.step_ms() as u64);
    put_u64(&mut out, store.block_steps());
    put_u64(&mut out, series.len() as u64);
    for (metric, labels, blocks) in series {
        put_str(&mut out, metric);
        put_u32(&mut out, labels.len() as u32);
        for (k, v) in labels.iter() {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        put_u32(&mut out, blocks.len() as u32);
        for block in blocks {
            put_u64(&mut out, block.number);
            out.extend_from_slice(&block.start.to_le_bytes());
            out.extend_from_slice(&block.samples.to_le_bytes());
            put_u32(&mut out, block.len_bits);
            put_u32(&mut out, block.words.len() as u32);
            for word in block.words.iter() {
                put_u64(&mut out, *word);
            }
        }
    }
    let sum = crc32fast::hash(&out);
    put_u32(&mut out, sum);
    out
}

fn decode(store: &Store, path: &Path, body: &[u8]) -> Result<(), SnapshotError> {
    let mut r = Reader { bytes: body, path };
    let (step_ms, block_steps) = (r.u64()?, r.u64()?);
    if step_ms != store.step_ms() as u64 || block_steps != store.block_steps() {
        return Err(SnapshotError::Layout {
            path: path.to_owned(),
            file_step_ms: step_ms,
            file_block_steps: block_steps,
            step_ms: store.step_ms() as u64,
            block_steps: store.block_steps(),
        });
    }
    let count = r.u64()?;
    for _ in 0..count {
        let metric = r.str()?;
        let tags = r.u32()?;
        let mut labels = Labels::new();
        for _ in 0..tags {
            let (k, v) = (r.str()?, r.str()?);
            labels.insert(k, v);
        }
        let blocks = (0..r.u32()?).map(|_| r.block()).collect::<Result<Vec<_>, _>>()?;
        let data = SeriesData::from_blocks(blocks, block_steps).map_err(|e| r.corrupt(&e.to_string()))?;
        if data.samples() > 0 {
            store.restore(&metric, labels, data);
        }
    }
    if !r.bytes.is_empty() {
        return Err(r.corrupt("bytes left after the last series"));
    }
    Ok(())
}

/// Reads the body; every read past its end is a `Corrupt` error.
struct Reader<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SnapshotError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("ends in the middle of a series"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let b = self.take(8)?;
        let mut word = [0; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    fn str(&mut self) -> Result<String, SnapshotError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.corrupt("a name is not UTF-8"))
    }

    fn block(&mut self) -> Result<Block, SnapshotError> {
        let (number, start, samples, len_bits) = (self.u64()?, self.u16()?, self.u16()?, self.u32()?);
        let words = self.u32()? as usize;
        if words.saturating_mul(8) > self.bytes.len() || u64::from(len_bits) > words as u64 * 64 {
            return Err(self.corrupt("a block is longer than the file"));
        }
        let words: Vec<u64> = (0..words).map(|_| self.u64()).collect::<Result<_, _>>()?;
        Ok(Block {
            number,
            start,
            samples,
            len_bits,
            words: words.into(),
        })
    }

    fn corrupt(&self, reason: &str) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
