//! Fault injection (FIT) on a route: which faults hit a request, decided by header match, the
//! fault's percentage and expiry.

use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use paved_types::{Fault, FaultAction};

use crate::env::Dice;

/// A route's faults, compiled for matching.
#[derive(Debug, Default)]
pub(crate) struct RouteFaults {
    faults: Vec<Compiled>,
}

/// What the faults do to one request: wait `delay` first, then answer `abort` if set.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Verdict<'a> {
    pub(crate) delay: Duration,
    pub(crate) abort: Option<(StatusCode, &'a str)>,
}

#[derive(Debug)]
struct Compiled {
    id: String,
    action: FaultAction,
    percent: f64,
    header: Option<(HeaderName, HeaderValue)>,
    expires_at_ms: u64,
}

impl RouteFaults {
    /// Compiles the valid faults among `faults`; invalid ones are logged and left out.
    pub(crate) fn compile<'a>(faults: impl Iterator<Item = &'a Fault>) -> Self {
        let faults = faults
            .filter_map(|f| match compile(f) {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!(fault = %f.id, route = %f.route, %why, "fault ignored");
                    None
                }
            })
            .collect();
        RouteFaults { faults }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Rolls each live fault that matches `headers`: delays add up, the first abort wins.
    pub(crate) fn roll(&self, headers: &HeaderMap, now_ms: u64, dice: &Dice) -> Verdict<'_> {
        let mut verdict = Verdict::default();
        for f in &self.faults {
            let matches = f.header.as_ref().is_none_or(|(k, v)| headers.get(k) == Some(v));
            if now_ms >= f.expires_at_ms || !matches || !dice.chance(f.percent) {
                continue;
            }
            match f.action {
                FaultAction::Delay(d) => verdict.delay += d,
                FaultAction::Abort(status) => {
                    if verdict.abort.is_none()
                        && let Ok(status) = StatusCode::from_u16(status)
                    {
                        verdict.abort = Some((status, &f.id));
                    }
                }
            }
        }
        verdict
    }
}

fn compile(f: &Fault) -> Result<Compiled, String> {
    f.validate().map_err(|e| e.to_string())?;
    let header = match &f.header {
        None => None,
        Some((k, v)) => Some((
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_str(v).map_err(|e| e.to_string())?,
        )),
    };
    Ok(Compiled {
        id: f.id.clone(),
        action: f.action,
        percent: f.percent,
        header,
        expires_at_ms: f.expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(id: &str, action: FaultAction, percent: f64, header: Option<(&str, &str)>) -> Fault {
        Fault {
            id: id.into(),
            route: "web".into(),
            action,
            percent,
            header: header.map(|(k, v)| (k.into(), v.into())),
            expires_at_ms: 10_000,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn matching_expiry_and_order() {
        let delay = FaultAction::Delay(Duration::from_millis(200));
        let faults = [
            fault("d", delay, 100.0, None),
            fault("a1", FaultAction::Abort(503), 100.0, Some(("X-Chaos", "on"))),
            fault("a2", FaultAction::Abort(500), 100.0, None),
        ];
        let compiled = RouteFaults::compile(faults.iter());
        let dice = Dice::seeded(1);
        let check = |h: &HeaderMap, now: u64, want: Verdict<'_>| {
            assert_eq!(compiled.roll(h, now, &dice), want, "{h:?} at {now}");
        };
        let ms200 = Duration::from_millis(200);
        let abort = |s: u16, id| Some((StatusCode::from_u16(s).unwrap(), id));
        check(
            &headers(&[("x-chaos", "on")]),
            0,
            Verdict {
                delay: ms200,
                abort: abort(503, "a1"),
            },
        );
        check(
            &headers(&[("x-chaos", "off")]),
            0,
            Verdict {
                delay: ms200,
                abort: abort(500, "a2"),
            },
        );
        check(&headers(&[]), 10_000, Verdict::default());
    }

    #[test]
    fn hit_rate_follows_percent() {
        let faults = [fault("a", FaultAction::Abort(503), 25.0, None)];
        let compiled = RouteFaults::compile(faults.iter());
        let dice = Dice::seeded(7);
        let empty = HeaderMap::new();
        let hits = (0..10_000)
            .filter(|_| compiled.roll(&empty, 0, &dice).abort.is_some())
            .count();
        assert!((2_300..2_700).contains(&hits), "{hits}");
    }

    #[test]
    fn invalid_faults_are_left_out() {
        let faults = [fault("bad", FaultAction::Abort(200), 50.0, None)];
        assert!(RouteFaults::compile(faults.iter()).is_empty());
    }
}
