//! An in-memory copy of the records the control loops read (jobs, tasks, nodes, routes and
//! faults), kept current by one store watch. A loop that lists the whole store after every write
//! does O(all records) of decoding per change; with a mirror it decodes each changed record once
//! and learns which jobs the change touched, so it can look at those alone.
//!
//! Each loop owns its mirror (no locks, no sharing): it lists once, then applies the watch's
//! events when it chooses to, by [`Mirror::catch_up`]. A mirror is only as fresh as its last
//! catch-up; a loop that acts on what it read and then reads again catches up to its own writes
//! first ([`Mirror::catch_up_to`]), so it never acts twice on a stale view.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{FutureExt as _, StreamExt};
use paved_store::{EventKind, KeyValue, WatchStream};
use paved_types::{Job, Node, Task};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::repo::{JOBS, NODES, Repo, RepoError, TASKS, Versioned, decode};
use crate::routing::{FAULTS, FaultRecord, ROUTES, RouteRecord};

/// The records the mirror keeps, by store key.
pub struct Mirror {
    repo: Repo,
    /// In a mutex only so a `&Mirror` can cross an await (the stream is not `Sync`); it is
    /// reached through `get_mut`, never locked.
    watch: std::sync::Mutex<WatchStream>,
    /// The store revision every record here reflects.
    revision: u64,
    /// Jobs by id.
    jobs: HashMap<String, Versioned<Job>>,
    /// Job ids by their store key (`/jobs/<tenant>/<name>`), to resolve deletes.
    job_keys: HashMap<String, String>,
    /// Tasks by job id, then by task id. A job id with tasks may have no job (orphans).
    tasks: HashMap<String, BTreeMap<String, Versioned<Task>>>,
    nodes: BTreeMap<String, Versioned<Node>>,
    routes: BTreeMap<String, Versioned<RouteRecord>>,
    faults: BTreeMap<String, Versioned<FaultRecord>>,
}

/// What one catch-up changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Ids of jobs whose record or whose tasks changed (or that were deleted).
    pub jobs: HashSet<String>,
    pub nodes: bool,
    pub routes: bool,
    pub faults: bool,
}

impl Mirror {
    /// Lists what the store holds now and starts following it.
    pub async fn start(repo: &Repo) -> Result<Mirror, RepoError> {
        let store = repo.store();
        let revision = store.revision().await?;
        // Watch first, then list: nothing committed in between is missed.
        let watch = store.watch("/", revision).await?;
        let mut mirror = Mirror {
            repo: repo.clone(),
            watch: std::sync::Mutex::new(watch),
            revision: 0,
            jobs: HashMap::new(),
            job_keys: HashMap::new(),
            tasks: HashMap::new(),
            nodes: BTreeMap::new(),
            routes: BTreeMap::new(),
            faults: BTreeMap::new(),
        };
        // Lists may reflect writes after `revision`; the watch replays those, and replaying a
        // put or a delete over a newer state ends in the same state.
        for prefix in [JOBS, TASKS, NODES, ROUTES, FAULTS] {
            for kv in store.list(prefix).await?.0 {
                mirror.put(kv);
            }
        }
        mirror.revision = revision;
        Ok(mirror)
    }

    fn stream(&mut self) -> &mut WatchStream {
        // A panic elsewhere cannot leave the stream half-used: take it as it is.
        self.watch.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Applies every event already delivered, without waiting.
    pub fn catch_up(&mut self) -> Result<Changes, RepoError> {
        let mut changes = Changes::default();
        self.catch_up_into(&mut changes)?;
        Ok(changes)
    }

    /// Waits for at least one change, then applies everything delivered.
    pub async fn next_change(&mut self) -> Result<Changes, RepoError> {
        let mut changes = Changes::default();
        let event = self.stream().next().await;
        self.apply(event, &mut changes)?;
        self.catch_up_into(&mut changes)?;
        Ok(changes)
    }

    /// Applies events until the mirror reflects at least `revision` (a write this loop made),
    /// then everything else already delivered.
    pub async fn catch_up_to(&mut self, revision: u64) -> Result<Changes, RepoError> {
        let mut changes = Changes::default();
        while self.revision < revision {
            let event = self.stream().next().await;
            self.apply(event, &mut changes)?;
        }
        self.catch_up_into(&mut changes)?;
        Ok(changes)
    }

    fn catch_up_into(&mut self, changes: &mut Changes) -> Result<(), RepoError> {
        while let Some(event) = self.stream().next().now_or_never() {
            self.apply(event, changes)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        event: Option<Result<paved_store::Event, paved_store::StoreError>>,
        changes: &mut Changes,
    ) -> Result<(), RepoError> {
        let event = match event {
            Some(event) => event?,
            None => return Err(RepoError::Rejected("the store's watch ended".into())),
        };
        self.revision = self.revision.max(event.revision);
        let key = event.key;
        let touched = match event.kind {
            EventKind::Put => self.put(KeyValue {
                key: key.clone(),
                value: event.value,
                create_revision: event.revision,
                mod_revision: event.revision,
            }),
            EventKind::Delete => self.delete(&key),
        };
        match touched {
            Touched::Job(id) => {
                changes.jobs.insert(id);
            }
            Touched::Node => changes.nodes = true,
            Touched::Route => changes.routes = true,
            Touched::Fault => changes.faults = true,
            Touched::Nothing => {}
        }
        Ok(())
    }

    fn put(&mut self, kv: KeyValue) -> Touched {
        let key = kv.key.clone();
        if key.starts_with(JOBS) {
            let Some(job) = decoded::<Job>(kv) else {
                return self.delete(&key);
            };
            let id = job.value.id.clone();
            // A name reused by a new job: the old job's record is gone with its key.
            if let Some(old) = self.job_keys.insert(key, id.clone())
                && old != id
            {
                self.jobs.remove(&old);
            }
            self.jobs.insert(id.clone(), job);
            Touched::Job(id)
        } else if let Some(rest) = key.strip_prefix(TASKS) {
            let Some((job_id, task_id)) = rest.split_once('/') else {
                return Touched::Nothing;
            };
            let (job_id, task_id) = (job_id.to_owned(), task_id.to_owned());
            let Some(task) = decoded::<Task>(kv) else {
                return self.delete(&key);
            };
            self.tasks
                .entry(job_id.clone())
                .or_default()
                .insert(task_id, task);
            Touched::Job(job_id)
        } else if let Some(name) = key.strip_prefix(NODES) {
            let name = name.to_owned();
            match decoded::<Node>(kv) {
                Some(node) => self.nodes.insert(name, node),
                None => self.nodes.remove(&name),
            };
            Touched::Node
        } else if let Some(name) = key.strip_prefix(ROUTES) {
            let name = name.to_owned();
            match decoded::<RouteRecord>(kv) {
                Some(route) => self.routes.insert(name, route),
                None => self.routes.remove(&name),
            };
            Touched::Route
        } else if let Some(id) = key.strip_prefix(FAULTS) {
            let id = id.to_owned();
            match decoded::<FaultRecord>(kv) {
                Some(fault) => self.faults.insert(id, fault),
                None => self.faults.remove(&id),
            };
            Touched::Fault
        } else {
            Touched::Nothing
        }
    }

    fn delete(&mut self, key: &str) -> Touched {
        if key.starts_with(JOBS) {
            match self.job_keys.remove(key) {
                Some(id) => {
                    self.jobs.remove(&id);
                    Touched::Job(id)
                }
                None => Touched::Nothing,
            }
        } else if let Some(rest) = key.strip_prefix(TASKS) {
            let Some((job_id, task_id)) = rest.split_once('/') else {
                return Touched::Nothing;
            };
            if let Some(tasks) = self.tasks.get_mut(job_id) {
                tasks.remove(task_id);
                if tasks.is_empty() {
                    self.tasks.remove(job_id);
                }
            }
            Touched::Job(job_id.to_owned())
        } else if let Some(name) = key.strip_prefix(NODES) {
            self.nodes.remove(name);
            Touched::Node
        } else if let Some(name) = key.strip_prefix(ROUTES) {
            self.routes.remove(name);
            Touched::Route
        } else if let Some(id) = key.strip_prefix(FAULTS) {
            self.faults.remove(id);
            Touched::Fault
        } else {
            Touched::Nothing
        }
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    pub fn job(&self, id: &str) -> Option<&Versioned<Job>> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Versioned<Job>> {
        self.jobs.values()
    }

    /// Every job id that has a job or tasks (a job deleted with tasks left is an orphan).
    pub fn job_ids(&self) -> HashSet<String> {
        self.jobs.keys().chain(self.tasks.keys()).cloned().collect()
    }

    /// The tasks of a job, in task id order.
    pub fn tasks_of(&self, job_id: &str) -> impl Iterator<Item = &Versioned<Task>> {
        self.tasks.get(job_id).into_iter().flat_map(|t| t.values())
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Versioned<Task>> {
        self.tasks.values().flat_map(|t| t.values())
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Versioned<Node>> {
        self.nodes.values()
    }

    pub fn routes(&self) -> impl Iterator<Item = &Versioned<RouteRecord>> {
        self.routes.values()
    }

    pub fn faults(&self) -> impl Iterator<Item = &Versioned<FaultRecord>> {
        self.faults.values()
    }
}

/// What one applied event changed.
enum Touched {
    /// A job's record or one of its tasks.
    Job(String),
    Node,
    Route,
    Fault,
    Nothing,
}

/// Decodes a record; one that does not decode is logged and left out, so one damaged record
/// cannot stop a control loop (the API reports it to whoever reads it).
fn decoded<T: DeserializeOwned>(kv: KeyValue) -> Option<Versioned<T>> {
    let key = kv.key.clone();
    match decode(kv) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(key, error = %e, "skipping an unreadable record");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
