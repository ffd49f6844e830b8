//! The compiled filter, run by a small classic-BPF interpreter over chosen system calls: what
//! the kernel will decide, checked without installing anything.

use super::*;

/// `SECCOMP_RET_ERRNO | errno`, and `SECCOMP_RET_KILL_PROCESS`.
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// What the filter returns for system call `nr` with `args` on architecture `arch`.
fn run(program: &BpfProgram, arch: u32, nr: i64, args: [u64; 6]) -> u32 {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&u32::try_from(nr).unwrap().to_ne_bytes());
    data.extend_from_slice(&arch.to_ne_bytes());
    data.extend_from_slice(&0u64.to_ne_bytes());
    for arg in args {
        data.extend_from_slice(&arg.to_ne_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &program[pc];
        pc += 1;
        let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match i.code {
            0x20 => {
                let at = usize::try_from(i.k).unwrap();
                acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
            }
            0x54 => acc &= i.k,
            0x05 => pc += usize::try_from(i.k).unwrap(),
            0x15 => pc += jump(acc == i.k),
            0x25 => pc += jump(acc > i.k),
            0x35 => pc += jump(acc >= i.k),
            0x45 => pc += jump(acc & i.k != 0),
            0x06 => return i.k,
            code => panic!("instruction {code:#x} not interpreted"),
        }
    }
}

fn native_arch(program: &BpfProgram) -> u32 {
    // The architecture check compares against it in its second instruction.
    program[1].k
}

fn errno(e: i32) -> u32 {
    RET_ERRNO | e.unsigned_abs()
}

#[test]
fn one_program_refuses_denied_calls_and_namespace_clones_and_hides_clone3() {
    let filters = Filters::build().unwrap();
    let program = &filters.program;
    let arch = native_arch(program);
    let check = |nr: i64, arg0: u64, expected: u32| {
        assert_eq!(
            run(program, arch, nr, [arg0, 0, 0, 0, 0, 0]),
            expected,
            "syscall {nr} arg0 {arg0:#x}"
        );
    };
    for nr in DENIED {
        check(*nr, 0, errno(libc::EPERM));
    }
    for flag in NAMESPACE_FLAGS {
        let flags = u64::from((flag | libc::SIGCHLD).unsigned_abs());
        check(libc::SYS_clone, flags, errno(libc::EPERM));
    }
    let thread =
        libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD;
    check(libc::SYS_clone, u64::from(thread.unsigned_abs()), RET_ALLOW);
    check(
        libc::SYS_clone,
        u64::from(libc::SIGCHLD.unsigned_abs()),
        RET_ALLOW,
    );
    check(libc::SYS_clone3, 0, errno(libc::ENOSYS));
    for allowed in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_execve,
        libc::SYS_openat,
        libc::SYS_exit_group,
    ] {
        check(allowed, 0, RET_ALLOW);
    }
}

#[test]
fn a_foreign_architecture_is_killed() {
    let filters = Filters::build().unwrap();
    let foreign = native_arch(&filters.program) ^ 1;
    assert_eq!(
        run(&filters.program, foreign, libc::SYS_read, [0; 6]),
        RET_KILL_PROCESS
    );
}

#[test]
fn splicing_refuses_programs_of_another_shape() {
    let filters = Filters::build().unwrap();
    let mut other_arch = filters.program.clone();
    other_arch[1].k ^= 1;
    assert!(splice(filters.program.clone(), other_arch).is_err());
    let mut no_allow = filters.program.clone();
    no_allow.push(no_allow[2].clone());
    assert!(splice(no_allow, filters.program.clone()).is_err());
}
