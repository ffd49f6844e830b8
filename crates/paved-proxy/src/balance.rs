//! Choosing a backend and an endpoint.
//!
//! - Backends (jobs) by weight: a weighted random choice; with stickiness, weighted rendezvous
//!   hashing of the sticky value, so a client stays on one backend, and moving weight moves
//!   only the clients whose backend loses it.
//! - Endpoints by power of two choices: draw two distinct endpoints, send to the cheaper, where
//!   cost is peak-EWMA latency × (in flight + 1) — the Finagle/linkerd balancer. It adapts to
//!   slow endpoints within a few requests, needs no shared state beyond per-endpoint atomics,
//!   and avoids the herd behaviour of "least loaded" across several proxies. Endpoints without
//!   a latency sample yet are compared by in-flight count alone. With stickiness, rendezvous
//!   hashing over task ids picks the endpoint, so only clients of a removed task move.

use std::sync::Arc;

use crate::endpoint::EndpointState;
use crate::env::Dice;

/// A stable 64-bit hash of text (FNV-1a, then a finaliser for avalanche), the same in every
/// proxy process, so several proxies agree on sticky choices.
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The combined hash of a sticky key and a candidate.
fn combine(key: u64, candidate: u64) -> u64 {
    mix(key ^ candidate.rotate_left(29))
}

/// Index of the backend a roll in `0..total` falls on, given cumulative weights.
pub(crate) fn by_weight(cumulative: &[u64], roll: u64) -> usize {
    cumulative
        .partition_point(|&c| c <= roll)
        .min(cumulative.len().saturating_sub(1))
}

/// Weighted rendezvous: the backend with the highest `weight / -ln(u)`, `u` uniform from the
/// key's hash with each backend's; zero weights never win.
pub(crate) fn sticky_backend(key: u64, backends: impl Iterator<Item = (u64, u32)>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, (id, weight)) in backends.enumerate() {
        if weight == 0 {
            continue;
        }
        let u = ((combine(key, id) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(weight) / -u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// An endpoint for a request: `usable` tells which may be chosen (admitted, not yet tried).
/// Falls back to ejected-but-untried, then to any endpoint, so a request is only refused when
/// there is no endpoint at all.
pub(crate) fn choose<'a>(
    endpoints: &'a [Arc<EndpointState>],
    sticky: Option<u64>,
    dice: &Dice,
    admitted: impl Fn(&EndpointState) -> bool,
    tried: &[&EndpointState],
) -> Option<&'a Arc<EndpointState>> {
    let untried = |e: &EndpointState| !tried.iter().any(|t| std::ptr::eq(*t, e));
    let passes: [&dyn Fn(&EndpointState) -> bool; 3] =
        [&|e| admitted(e) && untried(e), &|e| untried(e), &|_| true];
    passes.iter().find_map(|usable| match sticky {
        Some(key) => rendezvous(endpoints, key, usable),
        None => two_choices(endpoints, dice, usable),
    })
}

fn rendezvous<'a>(
    endpoints: &'a [Arc<EndpointState>],
    key: u64,
    usable: &dyn Fn(&EndpointState) -> bool,
) -> Option<&'a Arc<EndpointState>> {
    endpoints
        .iter()
        .filter(|e| usable(e))
        .max_by_key(|e| combine(key, e.task_hash))
}

fn two_choices<'a>(
    endpoints: &'a [Arc<EndpointState>],
    dice: &Dice,
    usable: &dyn Fn(&EndpointState) -> bool,
) -> Option<&'a Arc<EndpointState>> {
    let n = endpoints.len() as u64;
    if n < 2 {
        return endpoints.first().filter(|e| usable(e));
    }
    let roll = dice.u64();
    let a = ((roll >> 32) % n) as usize;
    let mut b = ((roll & 0xffff_ffff) % (n - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (ea, eb) = (&endpoints[a], &endpoints[b]);
    match (usable(ea), usable(eb)) {
        (true, true) => Some(if cheaper(eb, ea) { eb } else { ea }),
        (true, false) => Some(ea),
        (false, true) => Some(eb),
        (false, false) => endpoints
            .iter()
            .filter(|e| usable(e))
            .reduce(|best, e| if cheaper(e, best) { e } else { best }),
    }
}

/// Whether `a` costs less than `b`.
fn cheaper(a: &EndpointState, b: &EndpointState) -> bool {
    match (a.cost(), b.cost()) {
        (Some(ca), Some(cb)) => ca < cb,
        _ => a.in_flight() < b.in_flight(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                Arc::new(EndpointState::new(&format!("task-{i}"), addr))
            })
            .collect()
    }

    #[test]
    fn weights_split_rolls() {
        let cumulative = [10, 10, 40];
        let got: Vec<usize> = [0, 9, 10, 39, 1000]
            .iter()
            .map(|&r| by_weight(&cumulative, r))
            .collect();
        assert_eq!(got, [0, 0, 2, 2, 2]);
    }

    #[test]
    fn sticky_backends_follow_weights_and_move_little() {
        let ids = [hash_str("a"), hash_str("b")];
        let count = |weights: [u32; 2]| {
            (0..10_000u64)
                .map(|k| sticky_backend(hash_str(&k.to_string()), ids.iter().copied().zip(weights)))
                .collect::<Vec<_>>()
        };
        let even = count([50, 50]);
        let share = even.iter().filter(|&&i| i == 1).count();
        assert!((4_700..5_300).contains(&share), "{share}");
        let shifted = count([50, 0]);
        assert!(shifted.iter().all(|&i| i == 0));
        // Going from 50/50 to 75/25 moves only clients from b to a.
        let skewed = count([75, 25]);
        assert!(even.iter().zip(&skewed).all(|(e, s)| !(*e == 0 && *s == 1)));
    }

    #[test]
    fn two_choices_prefers_the_faster_endpoint() {
        let eps = endpoints(2);
        eps[0].observe_latency(Duration::from_millis(10));
        eps[1].observe_latency(Duration::from_millis(1));
        let dice = Dice::seeded(1);
        for _ in 0..100 {
            let e = choose(&eps, None, &dice, |_| true, &[]).unwrap();
            assert_eq!(e.task, "task-1");
        }
    }

    #[test]
    fn spreads_unmeasured_endpoints_by_in_flight() {
        let eps = endpoints(4);
        let dice = Dice::seeded(2);
        let mut held = Vec::new();
        for _ in 0..40 {
            let e = choose(&eps, None, &dice, |_| true, &[]).unwrap().clone();
            e.start_request();
            held.push(e);
        }
        let per: Vec<u32> = eps.iter().map(|e| e.in_flight()).collect();
        assert!(per.iter().all(|&n| (7..=13).contains(&n)), "{per:?}");
    }

    #[test]
    fn skips_the_inadmissible_and_the_tried_then_fails_open() {
        let eps = endpoints(3);
        let dice = Dice::seeded(3);
        let only_2 = |e: &EndpointState| e.task == "task-2";
        for _ in 0..50 {
            assert_eq!(choose(&eps, None, &dice, only_2, &[]).unwrap().task, "task-2");
        }
        let tried = [&*eps[2]];
        let next = choose(&eps, None, &dice, only_2, &tried).unwrap();
        assert_ne!(
            next.task, "task-2",
            "an ejected endpoint beats a retry on the same one"
        );
        let all: Vec<&EndpointState> = eps.iter().map(|e| &**e).collect();
        assert!(choose(&eps, None, &dice, |_| false, &all).is_some());
        assert!(choose(&[], None, &dice, |_| true, &[]).is_none());
    }

    #[test]
    fn sticky_endpoints_are_stable_and_spread() {
        let eps = endpoints(4);
        let dice = Dice::seeded(4);
        let mut seen = HashMap::new();
        for k in 0..1_000u64 {
            let key = hash_str(&format!("user-{k}"));
            let first = choose(&eps, Some(key), &dice, |_| true, &[])
                .unwrap()
                .task
                .clone();
            let again = choose(&eps, Some(key), &dice, |_| true, &[])
                .unwrap()
                .task
                .clone();
            assert_eq!(first, again);
            *seen.entry(first).or_insert(0) += 1;
        }
        assert!(seen.values().all(|&n| (180..320).contains(&n)), "{seen:?}");
    }
}
