//! The task directory's shim files (`spec.json`, `pid`, `exit.json`): how each is written and
//! read, shared by the runtime and the shim so both sides agree on names and formats.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::sandbox::{OVERLAY_WORK_DIR, ROOTFS_DIR, Root, UPPER_DIR};
use crate::{ExitStatus, RuntimeError, TaskSpec, WORK_DIR};

pub(crate) const SPEC_FILE: &str = "spec.json";
pub(crate) const PID_FILE: &str = "pid";
pub(crate) const EXIT_FILE: &str = "exit.json";

/// Files a finished task no longer needs. `exit.json` is not among them: it stays as the durable
/// record of how the task ended, for an agent that crashes between `wait` and saving the status.
const SHIM_FILES: [&str; 4] = [SPEC_FILE, PID_FILE, "pid.tmp", "exit.json.tmp"];

/// Creates the task directory, clears what a previous run in it left, and writes `spec.json`.
/// Returns the directory as an absolute path.
pub(crate) fn prepare(spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
    let dir_error = |source| RuntimeError::TaskDir {
        path: spec.dir.clone(),
        source,
    };
    // Logs may hold secrets: only the agent's user may look.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spec.dir)
        .map_err(dir_error)?;
    let dir = fs::canonicalize(&spec.dir).map_err(dir_error)?;
    prepare_work_dir(&dir, spec).map_err(dir_error)?;
    for name in [PID_FILE, EXIT_FILE] {
        remove_if_exists(&dir.join(name)).map_err(dir_error)?;
    }
    let spec = TaskSpec {
        dir: dir.clone(),
        ..spec.clone()
    };
    let json = serde_json::to_vec(&spec).map_err(|e| dir_error(io::Error::other(e)))?;
    fs::write(dir.join(SPEC_FILE), json).map_err(dir_error)?;
    Ok(dir)
}

/// The task's own directory (kept across restarts of the task, like its logs) and, for a
/// sandbox, the empty mount point of its root and the task user's ownership of its directory.
fn prepare_work_dir(dir: &Path, spec: &TaskSpec) -> io::Result<()> {
    let work = dir.join(WORK_DIR);
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&work)?;
    if let Some(plan) = &spec.sandbox {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(ROOTFS_DIR))?;
        std::os::unix::fs::chown(&work, Some(plan.uid), Some(plan.gid))?;
        if let Root::Overlay { .. } = plan.root {
            // A fresh writable layer each run, as a container gets. Its mode becomes the mode
            // of the task's `/`.
            for name in [UPPER_DIR, OVERLAY_WORK_DIR] {
                let path = dir.join(name);
                if path.exists() {
                    fs::remove_dir_all(&path)?;
                }
                fs::DirBuilder::new().mode(0o755).create(&path)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn read_spec(dir: &Path) -> Result<TaskSpec, RuntimeError> {
    let path = dir.join(SPEC_FILE);
    let bytes = fs::read(&path).map_err(|e| RuntimeError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| corrupt(path, e))
}

/// Writes `name` so readers see either nothing or all of it: a temporary file renamed into place.
///
/// Not fsynced: these files must outlive the agent and the shim, which the page cache ensures,
/// not a host crash, which kills the task too (the agent then finds neither a live shim nor an
/// exit and reports the task lost, which is the truth). An fsync of the file and its directory
/// cost about a tenth of a task's start-to-exit time.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(data)?;
    fs::rename(&tmp, dir.join(name))
}

pub(crate) fn write_pid(dir: &Path, pid: u32) -> io::Result<()> {
    write_atomic(dir, PID_FILE, format!("{pid}\n").as_bytes())
}

pub(crate) fn write_exit(dir: &Path, status: &ExitStatus) -> io::Result<()> {
    let json = serde_json::to_vec(status).map_err(io::Error::other)?;
    write_atomic(dir, EXIT_FILE, &json)
}

/// The task's pid, once the shim has started it.
pub(crate) fn read_pid(dir: &Path) -> Result<Option<u32>, RuntimeError> {
    let path = dir.join(PID_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    text.trim().parse().map(Some).map_err(|e| corrupt(path, e))
}

/// The task's exit status, once the shim has recorded it.
pub(crate) fn read_exit(dir: &Path) -> Result<Option<ExitStatus>, RuntimeError> {
    let path = dir.join(EXIT_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(path, e))
}

pub(crate) fn remove_shim_files(dir: &Path) -> Result<(), RuntimeError> {
    for name in SHIM_FILES {
        let path = dir.join(name);
        remove_if_exists(&path).map_err(|e| RuntimeError::io(path, e))?;
    }
    Ok(())
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io(path, e)),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn corrupt(path: PathBuf, reason: impl ToString) -> RuntimeError {
    RuntimeError::Corrupt {
        path,
        reason: reason.to_string(),
    }
}
