//! [`Drivers`]: the runtime the agent holds, which starts each task with the backend its spec
//! names and routes everything else by the backend recorded in the task's [`TaskRecord`].

use std::path::PathBuf;

use async_trait::async_trait;
use paved_types::Driver;

use crate::{
    ExecOutput, ExitStatus, Probe, ProcessRuntime, Runtime, RuntimeError, SandboxRuntime, TaskRecord,
    TaskSpec, TaskStats, process, sandbox,
};

/// Every backend of this host: the process backend always, the sandbox when the host allows it.
pub struct Drivers {
    process: ProcessRuntime,
    sandbox: Result<SandboxRuntime, String>,
}

impl Drivers {
    /// Sets up every backend; a sandbox that cannot work here (not root, a controller missing)
    /// is remembered with its reason, which every sandboxed start then reports.
    pub fn new(shim_exe: PathBuf) -> Self {
        let sandbox = SandboxRuntime::new(shim_exe.clone()).map_err(|e| e.to_string());
        match &sandbox {
            Ok(s) => tracing::info!(cgroups = %s.layout().describe(), "sandbox ready"),
            Err(reason) => tracing::warn!(%reason, "sandbox unavailable; sandboxed tasks will fail to start"),
        }
        Drivers {
            process: ProcessRuntime::new(shim_exe),
            sandbox,
        }
    }

    /// Why the sandbox cannot run here, if it cannot.
    pub fn sandbox_unavailable(&self) -> Option<&str> {
        self.sandbox.as_ref().err().map(String::as_str)
    }

    fn by_driver(&self, spec: &TaskSpec) -> Result<&dyn Runtime, RuntimeError> {
        match spec.driver {
            Driver::Process => Ok(&self.process),
            Driver::Sandbox => match &self.sandbox {
                Ok(sandbox) => Ok(sandbox),
                Err(reason) => Err(RuntimeError::StartFailed {
                    task_id: spec.task_id.clone(),
                    reason: format!("the sandbox is unavailable on this node: {reason}"),
                }),
            },
        }
    }

    /// The backend that started `record`: the sandbox's records name it, all others are the
    /// process backend's (the shim handling is the same).
    fn by_record(&self, record: &TaskRecord) -> &dyn Runtime {
        match (&self.sandbox, record.runtime.as_str()) {
            (Ok(sandbox), sandbox::NAME) => sandbox,
            _ => &self.process,
        }
    }
}

#[async_trait]
impl Runtime for Drivers {
    fn name(&self) -> &'static str {
        match self.sandbox {
            Ok(_) => sandbox::NAME,
            Err(_) => process::NAME,
        }
    }

    fn describe(&self) -> String {
        match &self.sandbox {
            Ok(sandbox) => format!(
                "sandbox, {}; process for trusted tenants",
                sandbox.layout().describe()
            ),
            Err(reason) => format!("process only; the sandbox is unavailable: {reason}"),
        }
    }

    async fn start(&self, spec: &TaskSpec) -> Result<TaskRecord, RuntimeError> {
        self.by_driver(spec)?.start(spec).await
    }

    async fn wait(&self, record: &TaskRecord) -> Result<ExitStatus, RuntimeError> {
        self.by_record(record).wait(record).await
    }

    async fn signal(&self, record: &TaskRecord, signal: i32) -> Result<(), RuntimeError> {
        self.by_record(record).signal(record, signal).await
    }

    async fn probe(&self, record: &TaskRecord) -> Probe {
        self.by_record(record).probe(record).await
    }

    async fn cleanup(&self, record: &TaskRecord) -> Result<(), RuntimeError> {
        self.by_record(record).cleanup(record).await
    }

    async fn exec(
        &self,
        record: &TaskRecord,
        spec: &TaskSpec,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        self.by_record(record).exec(record, spec, command, timeout).await
    }

    async fn stats(&self, record: &TaskRecord) -> Option<TaskStats> {
        self.by_record(record).stats(record).await
    }
}
