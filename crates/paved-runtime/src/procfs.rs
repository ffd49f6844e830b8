//! Reads `/proc/<pid>/stat`: a process's state, group, session and start time, which is how the
//! runtime tells its shims and tasks apart from whatever later reuses their pids.

use std::fs;
use std::io::{self, Read};

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), ...
    pub(crate) state: char,
    /// Field 4.
    pub(crate) ppid: u32,
    /// Field 5.
    pub(crate) pgrp: u32,
    /// Field 6.
    pub(crate) session: u32,
    /// Field 22: clock ticks after boot at which the process started.
    pub(crate) start_time: u64,
}

impl ProcStat {
    /// Dead, waiting to be reaped (`Z`), or being removed (`X`).
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // The iterator now stands at field 7; field 22 is 15 further.
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        session,
        start_time,
    })
}

/// The stat of `pid`, or `None` when no such process exists (or it cannot be read).
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    // One read of a buffer that holds any stat line: scans read thousands of these.
    let mut buffer = [0u8; 1024];
    let read = fs::File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read(&mut buffer));
    match read {
        // A command name need not be UTF-8; the fields after it always are.
        Ok(n) => parse_stat(&String::from_utf8_lossy(&buffer[..n])),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::ESRCH) {
                tracing::debug!(pid, error = %e, "cannot read process stat");
            }
            None
        }
    }
}

/// `root` and its live descendants (a snapshot: processes may come and go meanwhile).
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let all = scan(|_, _| true);
    let mut found: Vec<u32> = all
        .iter()
        .filter(|(pid, _)| *pid == root)
        .map(|(pid, _)| *pid)
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, s)| s.ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found
}

/// Whether `pid` is alive (not a zombie) and is the process that started at `start_time`.
pub(crate) fn is_alive(pid: u32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|s| !s.is_dead() && s.start_time == start_time)
}

/// Every live (non-zombie) process for which `keep` holds, with its stat.
pub(crate) fn scan(keep: impl Fn(u32, &ProcStat) -> bool) -> Vec<(u32, ProcStat)> {
    let entries = match fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list /proc");
            return Vec::new();
        }
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .filter(|(pid, stat)| !stat.is_dead() && keep(*pid, stat))
        .collect()
}

/// Whether any live process is in process group `pgrp` of session `session`.
pub(crate) fn group_alive(pgrp: u32, session: u32) -> bool {
    let in_group = |s: &ProcStat| s.pgrp == pgrp && s.session == session && !s.is_dead();
    // The leader usually still runs; only scan when it does not.
    read_stat(pgrp).is_some_and(|s| in_group(&s)) || !scan(|_, s| in_group(s)).is_empty()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stat_line(comm: &str, state: char, pgrp: u32, session: u32, start: u64) -> String {
        format!(
            "4242 ({comm}) {state} 1 {pgrp} {session} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
             {start} 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    fn check(text: &str, expected: Option<(char, u32, u32, u64)>) {
        let got = parse_stat(text).map(|s| (s.state, s.pgrp, s.session, s.start_time));
        assert_eq!(got, expected, "parsing {text:?}");
    }

    #[test]
    fn parses_stat_lines() {
        check(&stat_line("sleep", 'S', 7, 8, 99), Some(('S', 7, 8, 99)));
        check(&stat_line("a) b (c", 'Z', 1, 2, 3), Some(('Z', 1, 2, 3)));
        check(&stat_line("", 'R', 10, 10, 0), Some(('R', 10, 10, 0)));
        check("4242 (sleep) S 1 2", None);
        check("no parenthesis at all", None);
        check("", None);
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let stat = read_stat(me).expect("own stat");
        assert!(is_alive(me, stat.start_time));
        assert!(!is_alive(me, stat.start_time + 1));
    }

    proptest! {
        #[test]
        fn any_comm_parses(
            comm in "[ -~]{0,16}",
            state in "[RSDZTX]",
            pgrp in 1u32..4_194_304,
            session in 1u32..4_194_304,
            start in any::<u64>(),
        ) {
            let state = state.chars().next().unwrap_or('R');
            let parsed = parse_stat(&stat_line(&comm, state, pgrp, session, start));
            prop_assert_eq!(parsed, Some(ProcStat { state, ppid: 1, pgrp, session, start_time: start }));
        }

        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_stat(&text);
        }
    }
}
