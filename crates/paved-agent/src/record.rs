//! The agent's own record of each task it runs, kept beside the task's files, so a restarted
//! agent finds and re-adopts its tasks without asking anyone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use paved_runtime::TaskRecord;
use serde::{Deserialize, Serialize};

const RECORD_FILE: &str = "agent.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalRecord {
    pub task_id: String,
    pub job_id: String,
    pub ports: BTreeMap<String, u16>,
    /// The running process; `None` between runs (waiting to restart).
    pub process: Option<TaskRecord>,
}

impl LocalRecord {
    /// Writes the record atomically, so a crash leaves the old one or the new one.
    pub fn save(&self, task_dir: &Path) -> std::io::Result<()> {
        let path = task_dir.join(RECORD_FILE);
        let tmp = task_dir.join(format!("{RECORD_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(tmp, path)
    }

    pub fn remove(task_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(task_dir.join(RECORD_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record under `tasks_dir`, with the directory it was found in. Unreadable ones
    /// are reported and skipped: one damaged file must not stop the agent.
    pub fn load_all(tasks_dir: &Path) -> Vec<(PathBuf, LocalRecord)> {
        let Ok(entries) = std::fs::read_dir(tasks_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join(RECORD_FILE);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match serde_json::from_slice(&bytes) {
                Ok(record) => out.push((entry.path(), record)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable task record")
                }
            }
        }
        out
    }
}
