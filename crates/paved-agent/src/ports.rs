//! Host ports for tasks: handed out from a range, each checked free by binding it first.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;

#[derive(Debug, thiserror::Error)]
#[error("no free port left in {start}..{end}; stop some tasks or widen the agent's port range")]
pub struct PortsExhausted {
    start: u16,
    end: u16,
}

#[derive(Debug)]
pub struct Ports {
    range: Range<u16>,
    used: BTreeSet<u16>,
    next: u16,
}

impl Ports {
    /// Hands out ports of `range`, starting at a random one: agents (and the in-process
    /// platforms of tests) that share a host rarely reach for the same port at the same time,
    /// when one task's server has not bound its port yet and the port still looks free.
    pub fn new(range: Range<u16>) -> Self {
        use rand::Rng as _;
        let next = if range.is_empty() {
            range.start
        } else {
            rand::rng().random_range(range.clone())
        };
        Ports {
            range,
            used: BTreeSet::new(),
            next,
        }
    }

    /// `n` ports nobody holds, marked used.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u16>, PortsExhausted> {
        let mut got = Vec::with_capacity(n);
        let span = usize::from(self.range.end - self.range.start);
        for _ in 0..span {
            if got.len() == n {
                break;
            }
            let port = self.next;
            self.next = if port + 1 >= self.range.end {
                self.range.start
            } else {
                port + 1
            };
            if !self.used.contains(&port) && is_free(port) {
                self.used.insert(port);
                got.push(port);
            }
        }
        if got.len() < n {
            self.release(&got);
            return Err(PortsExhausted {
                start: self.range.start,
                end: self.range.end,
            });
        }
        Ok(got)
    }

    /// Marks ports held by a task that was running before the agent restarted.
    pub fn claim(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.used.extend(ports);
    }

    pub fn release(&mut self, ports: &[u16]) {
        for p in ports {
            self.used.remove(p);
        }
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ranges below the kernel's ephemeral ports (32768+), which outgoing connections of other
    // tests would hold, and outside the agent's default range.
    #[test]
    fn hands_out_distinct_free_ports_and_reuses_released_ones() {
        let mut ports = Ports::new(18000..18010);
        let a = ports.allocate(3).unwrap();
        let b = ports.allocate(3).unwrap();
        assert!(a.iter().all(|p| !b.contains(p)));
        ports.release(&a);
        let c = ports.allocate(4).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(ports.allocate(3).unwrap().len(), 3, "wraps around to the 3 left");
        assert!(ports.allocate(1).is_err(), "all 10 held");
    }

    #[test]
    fn skips_ports_in_use_by_others() {
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 18100)).unwrap();
        let mut ports = Ports::new(18100..18103);
        let mut got = ports.allocate(2).unwrap();
        got.sort_unstable();
        assert_eq!(got, [18101, 18102]);
        drop(held);
    }
}
