//! Task logs: the size-capped, rotating writer the shim feeds from the task's pipes, and
//! [`read`], which tails and follows a log across rotations.
//!
//! A log is `<stream>.log` plus, after a rotation, one older generation `<stream>.log.1`. The
//! writer splits writes at the cap exactly, so the two files concatenated are always the newest
//! bytes the task wrote, in order, and never more than two caps.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::task_dir::EXIT_FILE;
use crate::{RuntimeError, Stream};

/// What [`read`] returns: chunks of the log as they are read, in order.
pub type LogStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, RuntimeError>> + Send>>;

/// How often a following reader looks for new data.
const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Largest chunk a reader yields.
const CHUNK: usize = 64 * 1024;

/// Reads a task's log. Starts `tail_bytes` before the end (0: from the start of what is kept,
/// the rotated `.1` generation first). With `follow`, keeps yielding data as the task writes it,
/// across rotations, until the task has ended and everything is read, or the stream is dropped.
/// Without `follow`, ends at the end of the log. A log that does not exist yet reads as empty.
pub fn read(dir: &Path, stream: Stream, tail_bytes: u64, follow: bool) -> LogStream {
    let reader = Reader {
        dir: dir.to_path_buf(),
        stream,
        tail_bytes,
        follow,
        started: false,
        current: None,
        next: None,
        ending: false,
        done: false,
        buf: BytesMut::new(),
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_item().await?;
        Some((item, reader))
    }))
}

/// Appends a stream's output to its log file, rotating at the cap.
pub(crate) struct LogWriter {
    path: PathBuf,
    rotated: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

impl LogWriter {
    /// Opens (or creates) the log for appending; `limit` 0 means no cap.
    pub(crate) fn open(dir: &Path, stream: Stream, limit: u64) -> io::Result<Self> {
        let path = dir.join(stream.file_name());
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let rotated = dir.join(stream.rotated_file_name());
        Ok(LogWriter {
            path,
            rotated,
            file,
            size,
            limit,
        })
    }

    /// Writes all of `data`, rotating as often as the cap requires. On error the rest of `data`
    /// is lost; the next call tries again.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.limit > 0 && self.size >= self.limit {
                self.rotate()?;
            }
            let room = match self.limit {
                0 => data.len(),
                limit => data
                    .len()
                    .min(usize::try_from(limit - self.size).unwrap_or(usize::MAX)),
            };
            self.file.write_all(&data[..room])?;
            self.size += room as u64;
            data = &data[room..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        match fs::rename(&self.path, &self.rotated) {
            // Someone removed the log; starting a new one is all that is left to do.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Where reading starts: an offset into the rotated generation (read first, when `Some`) and an
/// offset into the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    rotated: Option<u64>,
    current: u64,
}

/// Places the start `tail` bytes before the end of the rotated (`rotated_len`, `None` when absent)
/// and current (`current_len`) generations taken together.
fn plan_start(tail: u64, current_len: u64, rotated_len: Option<u64>) -> Start {
    match rotated_len {
        _ if tail == 0 => Start {
            rotated: rotated_len.map(|_| 0),
            current: 0,
        },
        _ if tail <= current_len => Start {
            rotated: None,
            current: current_len - tail,
        },
        None => Start {
            rotated: None,
            current: 0,
        },
        Some(len) => Start {
            rotated: Some(len.saturating_sub(tail - current_len)),
            current: 0,
        },
    }
}

/// An open generation of a log and its inode, to notice when the name points elsewhere.
struct OpenLog {
    path: PathBuf,
    file: tokio::fs::File,
    ino: u64,
    len: u64,
}

struct Reader {
    dir: PathBuf,
    stream: Stream,
    tail_bytes: u64,
    follow: bool,
    started: bool,
    /// The file being read; `None` while the log does not exist.
    current: Option<OpenLog>,
    /// The file to read once `current` is exhausted: the live log after the rotated one, or the
    /// new generation after a rotation.
    next: Option<OpenLog>,
    /// The task has ended: the next end of file is the end of the log.
    ending: bool,
    done: bool,
    buf: BytesMut,
}

impl Reader {
    async fn next_item(&mut self) -> Option<Result<Bytes, RuntimeError>> {
        if self.done {
            return None;
        }
        let item = self.step().await.transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }

    async fn step(&mut self) -> Result<Option<Bytes>, RuntimeError> {
        if !self.started {
            self.open_at_start().await?;
            self.started = true;
        }
        loop {
            if let Some(chunk) = self.read_chunk().await? {
                return Ok(Some(chunk));
            }
            if let Some(next) = self.next.take() {
                self.current = Some(next);
                continue;
            }
            if !self.follow {
                return Ok(None);
            }
            if self.rotated_away().await? {
                continue;
            }
            if self.ending {
                return Ok(None);
            }
            // The shim writes exit.json only after the task's output is all in the log, so one
            // more pass after seeing it reads everything.
            if self.task_ended().await {
                self.ending = true;
                continue;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn open_at_start(&mut self) -> Result<(), RuntimeError> {
        let (current, rotated) = self.open_generations().await?;
        let current_len = current.as_ref().map_or(0, |c| c.len);
        let start = plan_start(self.tail_bytes, current_len, rotated.as_ref().map(|r| r.len));
        let current = seek_log(current, start.current).await?;
        match (start.rotated, rotated) {
            (Some(offset), Some(rotated)) => {
                self.current = seek_log(Some(rotated), offset).await?;
                self.next = current;
            }
            _ => self.current = current,
        }
        Ok(())
    }

    /// Opens the current and the rotated generation, whichever exist.
    async fn open_generations(&self) -> Result<(Option<OpenLog>, Option<OpenLog>), RuntimeError> {
        let path = self.dir.join(self.stream.file_name());
        let rotated_path = self.dir.join(self.stream.rotated_file_name());
        let mut attempts = 3;
        loop {
            let current = open_log(&path).await?;
            let rotated = open_log(&rotated_path).await?;
            let same = matches!((&current, &rotated), (Some(c), Some(r)) if c.ino == r.ino);
            attempts -= 1;
            match same {
                // Rotated between the two opens, so both names led to one file: look again.
                true if attempts > 0 => continue,
                true => return Ok((current, None)),
                false => return Ok((current, rotated)),
            }
        }
    }

    async fn read_chunk(&mut self) -> Result<Option<Bytes>, RuntimeError> {
        let Some(log) = self.current.as_mut() else {
            return Ok(None);
        };
        self.buf.reserve(CHUNK);
        let n = log.file.read_buf(&mut self.buf).await.map_err(|e| log.error(e))?;
        Ok((n > 0).then(|| self.buf.split().freeze()))
    }

    /// Whether the log's name now points to a newer file than the one being read; if so, queues
    /// it to be read once the current one, which is final, is drained.
    async fn rotated_away(&mut self) -> Result<bool, RuntimeError> {
        let path = self.dir.join(self.stream.file_name());
        let ino = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(RuntimeError::Log { path, source }),
        };
        if self.current.as_ref().is_some_and(|c| c.ino == ino) {
            return Ok(false);
        }
        self.next = open_log(&path).await?;
        Ok(self.next.is_some())
    }

    async fn task_ended(&self) -> bool {
        tokio::fs::try_exists(self.dir.join(EXIT_FILE))
            .await
            .unwrap_or(false)
    }
}

impl OpenLog {
    fn error(&self, source: io::Error) -> RuntimeError {
        RuntimeError::Log {
            path: self.path.clone(),
            source,
        }
    }
}

async fn open_log(path: &Path) -> Result<Option<OpenLog>, RuntimeError> {
    let log_error = |source| RuntimeError::Log {
        path: path.to_path_buf(),
        source,
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(log_error(e)),
    };
    let meta = file.metadata().await.map_err(log_error)?;
    Ok(Some(OpenLog {
        path: path.to_path_buf(),
        file,
        ino: meta.ino(),
        len: meta.len(),
    }))
}

async fn seek_log(log: Option<OpenLog>, offset: u64) -> Result<Option<OpenLog>, RuntimeError> {
    let Some(mut log) = log else { return Ok(None) };
    if offset > 0 {
        log.file
            .seek(io::SeekFrom::Start(offset))
            .await
            .map_err(|e| log.error(e))?;
    }
    Ok(Some(log))
}

#[cfg(test)]
mod tests;
