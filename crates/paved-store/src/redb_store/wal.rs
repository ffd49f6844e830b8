//! The write-ahead log of a `RedbStore`: what makes a write durable.
//!
//! A durable redb commit writes every copy-on-write page a batch touched (about twenty 4 KiB
//! pages for a couple of small puts: both B-trees' paths, the table tree, the allocator state)
//! and fsyncs them; under a steady stream of small writes that was half of the server's CPU.
//! So the writer commits to redb without fsync (`Durability::None`: the pages stay in redb's
//! memory) and makes each batch durable by appending one record to this log and calling
//! `fdatasync` on it: one or two pages. Every so often (`checkpoint`), one durable redb commit
//! writes out everything since the last one, and the log starts over from its beginning.
//!
//! After a crash, redb opens at its last durable commit and [`Wal::recover`] hands back the
//! records after it, to be applied again. Records form a chain: each names the revision it
//! follows, so the records left behind by an earlier pass over the file (the log is
//! overwritten, never truncated) end the chain as surely as a torn or zeroed record does.
//!
//! The file is only overwritten where it was written before, zeros included: then `fdatasync`
//! has only data to flush, not the file's size or block allocation (which would cost ext4 a
//! journal commit per sync).
//!
//! A record: `len: u32, crc32(body): u32, body`, little-endian; the body is
//! `prev_revision: u64, revision: u64, compacted: u64, count: u32` and `count` events of
//! `revision: u64, kind: u8, key_len: u32, key, value_len: u32, value`.

use std::io;
use std::os::unix::fs::FileExt;

use super::{Meta, kind_code, kind_of};
use crate::Event;

/// The file under a log: a real file, or in tests memory that can fail like a full disk.
pub(super) trait WalFile: Send {
    fn len(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Drops the file's content: its records belong to another store.
    fn clear(&self) -> io::Result<()>;
}

impl WalFile for std::fs::File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn clear(&self) -> io::Result<()> {
        self.set_len(0)?;
        self.sync_data()
    }
}

/// One record: the events of one batch, the revision before it and the counters after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    before: u64,
    pub(super) after: Meta,
    pub(super) events: Vec<Event>,
}

pub(super) struct Wal {
    file: Box<dyn WalFile>,
    /// Where the next record goes.
    end: u64,
    /// How much of the file holds bytes we wrote (records or zeros): overwriting them changes
    /// no file metadata.
    written: u64,
    /// The encoding buffer, kept between appends.
    buffer: Vec<u8>,
}

/// How much the file grows by (written as zeros, and synced apart from any record) when a
/// record would pass its end. Small on purpose: the sync that makes the zeros durable flushes
/// all of them and changes the file's size, and a store's first pass over its log (up to the
/// first checkpoint) grows it all the way. In 4 MiB steps, each of those syncs stalled every
/// writer for 100-150 ms when the disk was busy (`cargo xtask bench api`, creates at 2,000/s:
/// p99 6-7 ms; with the log allocated beforehand, 2.7-2.9 ms). In 256 KiB steps a growth costs
/// one batch a fraction of a millisecond.
const GROWTH: u64 = 256 << 10;
const HEADER: usize = 8;
const BODY_HEADER: usize = 28;

impl Wal {
    /// Reads the chain of records and returns those after `from` (the store's last durable
    /// state), and the log, positioned to overwrite them once they are applied and
    /// checkpointed.
    pub(super) fn recover(file: Box<dyn WalFile>, from: Meta) -> io::Result<(Wal, Vec<Record>)> {
        let written = file.len()?;
        let mut records = Vec::new();
        // The chain starts at the file's beginning. Its first records may be in the durable
        // state already (a checkpoint that reported a failure may have made them durable all
        // the same), so they are skipped; the records after them must follow on exactly.
        let (mut offset, mut chain, mut at) = (0, None::<Meta>, from);
        while let Some((record, next)) = read_record(file.as_ref(), offset, written)? {
            if chain.is_some_and(|end| !record.follows(end)) {
                break;
            }
            chain = Some(record.after);
            offset = next;
            if record.after.revision <= at.revision && record.after.compacted <= at.compacted {
                continue;
            }
            if !record.follows(at) {
                break;
            }
            at = record.after;
            records.push(record);
        }
        let wal = Wal {
            file,
            end: 0,
            written,
            buffer: Vec::new(),
        };
        Ok((wal, records))
    }

    /// A log for a store created just now: whatever the file held belonged to another one.
    pub(super) fn fresh(file: Box<dyn WalFile>) -> io::Result<Wal> {
        file.clear()?;
        Ok(Wal {
            file,
            end: 0,
            written: 0,
            buffer: Vec::new(),
        })
    }

    /// Bytes of records since the last checkpoint.
    pub(super) fn len(&self) -> u64 {
        self.end
    }

    /// Appends the record of a batch that moves the store from `before` to `after`, and makes
    /// it durable. On an error the record may or may not be durable.
    pub(super) fn append(&mut self, before: Meta, after: Meta, events: &[Event]) -> io::Result<()> {
        encode(&mut self.buffer, before.revision, after, events)?;
        let next = self.end + self.buffer.len() as u64;
        if next > self.written {
            self.grow(next)?;
        }
        self.file.write_all_at(&self.buffer, self.end)?;
        self.file.sync()?;
        self.end = next;
        Ok(())
    }

    /// The file, for a test to read back as a reopened store would.
    #[cfg(test)]
    pub(super) fn into_file(self) -> Box<dyn WalFile> {
        self.file
    }

    /// Starts over from the beginning of the file: every record is in a durable redb commit.
    /// Zeroing the first header spares the next open from reading the old chain only to skip
    /// it; it needs no sync, since that chain is safe to skip either way.
    pub(super) fn restart(&mut self) -> io::Result<()> {
        self.end = 0;
        if self.written >= HEADER as u64 {
            self.file.write_all_at(&[0; HEADER], 0)?;
        }
        Ok(())
    }

    /// Writes zeros past the file's end so that it holds at least `needed` bytes, and syncs
    /// them: the record's own sync then has only the record to flush.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed.max(self.written + GROWTH);
        let zeros = vec![0; GROWTH.min(target - self.written) as usize];
        let mut at = self.written;
        while at < target {
            let chunk = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..chunk], at)?;
            at += chunk as u64;
        }
        self.file.sync()?;
        self.written = target;
        Ok(())
    }
}

impl Record {
    /// Whether this record continues a store at `at`: it follows `at`'s revision and moves the
    /// store forward. A record written before the log last started over ends at or before the
    /// checkpoint that made it start over, so it never continues a store that reached it.
    fn follows(&self, at: Meta) -> bool {
        self.before == at.revision
            && self.after.revision >= at.revision
            && self.after.compacted >= at.compacted
            && self.after != at
    }
}

fn encode(buffer: &mut Vec<u8>, prev_revision: u64, after: Meta, events: &[Event]) -> io::Result<()> {
    buffer.clear();
    buffer.extend_from_slice(&[0; HEADER]);
    buffer.extend_from_slice(&prev_revision.to_le_bytes());
    buffer.extend_from_slice(&after.revision.to_le_bytes());
    buffer.extend_from_slice(&after.compacted.to_le_bytes());
    buffer.extend_from_slice(&length(events.len())?.to_le_bytes());
    for event in events {
        buffer.extend_from_slice(&event.revision.to_le_bytes());
        buffer.push(kind_code(event.kind));
        buffer.extend_from_slice(&length(event.key.len())?.to_le_bytes());
        buffer.extend_from_slice(event.key.as_bytes());
        buffer.extend_from_slice(&length(event.value.len())?.to_le_bytes());
        buffer.extend_from_slice(&event.value);
    }
    let body_len = length(buffer.len() - HEADER)?;
    let crc = crc32fast::hash(&buffer[HEADER..]);
    buffer[..4].copy_from_slice(&body_len.to_le_bytes());
    buffer[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn length(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a write of 4 GiB or more does not fit the store's log",
        )
    })
}

/// The record at `offset` and the offset after it; `None` where the chain cannot go on: the
/// file ends, zeros, a torn or damaged record.
fn read_record(file: &dyn WalFile, offset: u64, len: u64) -> io::Result<Option<(Record, u64)>> {
    if offset + HEADER as u64 > len {
        return Ok(None);
    }
    let mut header = [0; HEADER];
    file.read_exact_at(&mut header, offset)?;
    let body_len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let start = offset + HEADER as u64;
    if body_len < BODY_HEADER as u64 || start + body_len > len {
        return Ok(None);
    }
    let mut body = vec![0; body_len as usize];
    file.read_exact_at(&mut body, start)?;
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(decode(&body).map(|record| (record, start + body_len)))
}

/// Decodes a body whose checksum held; `None` if it does not parse all the same.
fn decode(body: &[u8]) -> Option<Record> {
    let mut read = Reader(body);
    let before = read.u64()?;
    let after = Meta {
        revision: read.u64()?,
        compacted: read.u64()?,
    };
    let count = read.u32()?;
    let mut events = Vec::new();
    for _ in 0..count {
        let revision = read.u64()?;
        let kind = kind_of(*read.bytes(1)?.first()?)?;
        let key_len = read.u32()? as usize;
        let key = String::from_utf8(read.bytes(key_len)?.to_vec()).ok()?;
        let value_len = read.u32()? as usize;
        let value = read.bytes(value_len)?.to_vec();
        events.push(Event {
            revision,
            kind,
            key,
            value,
        });
    }
    // Our writer never wrote anything else: a body that fails these, checksum or not, ends
    // the chain.
    let revisions_fit = events
        .iter()
        .all(|e| e.revision > before && e.revision <= after.revision);
    (read.0.is_empty() && revisions_fit).then_some(Record {
        before,
        after,
        events,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}
