//! The default seccomp filter. Docker's default profile is the reference: the system calls it
//! leaves out of its allowlist for a container without extra capabilities are refused here
//! with `EPERM`, and `clone3`, whose flags a filter cannot read, with `ENOSYS` so that libc falls
//! back to `clone`, whose namespace flags are checked. Written as a denylist so any host binary
//! runs; a task has no capabilities either, so most of these would fail anyway: the filter is
//! the second wall, against kernel bugs reachable through them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// Refused outright.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// `clone` flags that make namespaces; a task may fork and spawn threads, not make namespaces.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The compiled filter: one program, so a task pays for one attach (each costs the kernel a
/// translation, a JIT compilation and a pass over every system call number for its cache).
pub(crate) struct Filters {
    program: BpfProgram,
}

/// Instructions every seccompiler program starts with: load the architecture, compare it, kill
/// on mismatch.
const ARCH_CHECK_LEN: usize = 3;
/// `BPF_RET | BPF_K`, and the `SECCOMP_RET_ALLOW` it returns at a program's end.
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
#[derive(Debug, thiserror::Error)]
#[error("cannot build the seccomp filter: {0}")]
pub(crate) struct SeccompError(String);

/// The filters, compiled once per process: the shim launcher compiles them before it forks any
/// shim, so every sandbox inherits them ready.
pub(crate) fn compiled() -> Result<&'static Filters, SeccompError> {
    static FILTERS: std::sync::OnceLock<Result<Filters, SeccompError>> = std::sync::OnceLock::new();
    FILTERS
        .get_or_init(Filters::build)
        .as_ref()
        .map_err(|e| SeccompError(e.0.clone()))
}

impl Filters {
    /// Compiles the filters for this machine's architecture.
    pub(crate) fn build() -> Result<Filters, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SeccompError(e.to_string()))?;
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, vec![])).collect();
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|flag| {
                let flag = u64::from(flag.unsigned_abs());
                let condition =
                    SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?;
                SeccompRule::new(vec![condition])
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SeccompError(e.to_string()))?;
        denied.insert(libc::SYS_clone, clone_rules);
        let eperm = SeccompAction::Errno(libc::EPERM.unsigned_abs());
        let enosys = SeccompAction::Errno(libc::ENOSYS.unsigned_abs());
        let compile = |rules, action| {
            SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
                .and_then(BpfProgram::try_from)
                .map_err(|e| SeccompError(e.to_string()))
        };
        let clone3 = BTreeMap::from([(libc::SYS_clone3, vec![])]);
        let program = splice(compile(clone3, enosys)?, compile(denied, eperm)?)?;
        Ok(Filters { program })
    }

    /// Installs the filter on the calling thread; needs `no_new_privs` (or CAP_SYS_ADMIN).
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        seccompiler::apply_filter(&self.program).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// One program that runs `first`, and `second` where `first` would allow: seccompiler gives a
/// program one action for all its matches, and the filter needs two (ENOSYS, EPERM).
///
/// Both are seccompiler programs: the architecture check, then chains whose jumps are relative
/// and never leave their chain except to the next one, then `ret ALLOW`. So `first` without its
/// final `ret ALLOW` falls through into `second`'s chains, which follow their own check.
fn splice(mut first: BpfProgram, second: BpfProgram) -> Result<BpfProgram, SeccompError> {
    let ends_in_allow = first.last().is_some_and(|i| i.code == RET_K && i.k == RET_ALLOW);
    let same_check = first.get(..ARCH_CHECK_LEN) == second.get(..ARCH_CHECK_LEN);
    if !ends_in_allow || !same_check {
        return Err(SeccompError(
            "unexpected layout of the compiled seccomp programs".to_owned(),
        ));
    }
    first.pop();
    first.extend_from_slice(&second[ARCH_CHECK_LEN..]);
    Ok(first)
}

#[cfg(test)]
mod tests;
