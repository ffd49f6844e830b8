//! `ProxyConfig`: the proxy's settings, typed, documented and validated once at start. In a
//! config file durations are written as text ("10s", "1m30s").

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the proxy listens and treats upstreams. Routes and endpoints are not here: they arrive
/// live in [`crate::Snapshot`]s.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Terminate TLS on the listener (ALPN h2 and http/1.1); `None`: plain HTTP (h2c accepted).
    pub tls: Option<TlsConfig>,
    pub retry_budget: RetryBudgetConfig,
    pub ejection: EjectionConfig,
    pub pool: PoolConfig,
}

/// Certificate files in PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// Retries allowed across all routes, so that retries cannot multiply load on a failing job:
/// at most `ratio` of recent requests, plus `min_per_second` whatever the traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries earned per request, 0 to 1 (0.2: one retry per five requests).
    pub ratio: f64,
    /// Retries allowed each second even without requests to earn them.
    pub min_per_second: u32,
}

/// Passive health: when an endpoint stops getting requests after failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    /// Consecutive failures (connect errors, resets, 5xx answers) that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one in a row doubles it.
    #[serde(with = "text_duration")]
    pub base: Duration,
    /// The longest an ejection lasts.
    #[serde(with = "text_duration")]
    pub max: Duration,
}

/// Connections to upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// An idle pooled connection is closed after this long.
    #[serde(with = "text_duration")]
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// A connect that takes longer fails (and may be retried elsewhere).
    #[serde(with = "text_duration")]
    pub connect_timeout: Duration,
    /// Largest request body buffered so that an idempotent request can be retried; larger
    /// bodies stream and are not retried.
    pub retry_buffer_bytes: usize,
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("retry_budget.ratio {0} is out of range; use 0 to 1, e.g. 0.2")]
    RetryRatio(f64),
    #[error("ejection.consecutive_failures is 0; use at least 1, e.g. 5")]
    EjectionFailures,
    #[error("ejection.base is 0; use a backoff such as \"10s\"")]
    EjectionBase,
    #[error("ejection.max {max:?} is below ejection.base {base:?}; make max at least base")]
    EjectionMax { base: Duration, max: Duration },
    #[error("pool.idle_timeout is 0; use a duration such as \"90s\"")]
    PoolIdle,
    #[error("pool.connect_timeout {0:?} is out of range; use 1ms to 1m, e.g. \"2s\"")]
    PoolConnect(Duration),
    #[error("pool.retry_buffer_bytes {0} is above 16MiB; use at most 16777216, e.g. 65536")]
    RetryBuffer(usize),
    #[error("tls.{0} is empty; give the path of a PEM file")]
    TlsPath(&'static str),
}

impl ProxyConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.retry_budget;
        if !(0.0..=1.0).contains(&b.ratio) {
            return Err(ConfigError::RetryRatio(b.ratio));
        }
        let e = &self.ejection;
        if e.consecutive_failures == 0 {
            return Err(ConfigError::EjectionFailures);
        }
        if e.base.is_zero() {
            return Err(ConfigError::EjectionBase);
        }
        if e.max < e.base {
            return Err(ConfigError::EjectionMax {
                base: e.base,
                max: e.max,
            });
        }
        self.pool.validate()?;
        if let Some(tls) = &self.tls {
            if tls.cert_chain.as_os_str().is_empty() {
                return Err(ConfigError::TlsPath("cert_chain"));
            }
            if tls.private_key.as_os_str().is_empty() {
                return Err(ConfigError::TlsPath("private_key"));
            }
        }
        Ok(())
    }
}

impl PoolConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::PoolIdle);
        }
        let connect = Duration::from_millis(1)..=Duration::from_secs(60);
        if !connect.contains(&self.connect_timeout) {
            return Err(ConfigError::PoolConnect(self.connect_timeout));
        }
        if self.retry_buffer_bytes > 16 << 20 {
            return Err(ConfigError::RetryBuffer(self.retry_buffer_bytes));
        }
        Ok(())
    }
}

impl EjectionConfig {
    /// How long ejection number `n` in a row (1-based) lasts: `base * 2^(n-1)`, capped at `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: 5,
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
            connect_timeout: Duration::from_secs(2),
            retry_buffer_bytes: 64 << 10,
        }
    }
}

/// Serde for a `Duration` as text ("10s"), in paved's duration syntax.
mod text_duration {
    use std::time::Duration;

    use paved_types::units::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(edit: impl FnOnce(&mut ProxyConfig), want: &str) {
        let mut c = ProxyConfig::default();
        edit(&mut c);
        match c.validate() {
            Ok(()) => assert_eq!(want, "", "{c:?} validated"),
            Err(e) => assert!(
                !want.is_empty() && e.to_string().contains(want),
                "{e} vs {want:?}"
            ),
        }
    }

    #[test]
    fn ranges() {
        check(|_| {}, "");
        check(|c| c.retry_budget.ratio = 1.5, "retry_budget.ratio 1.5");
        check(|c| c.retry_budget.ratio = f64::NAN, "retry_budget.ratio NaN");
        check(
            |c| c.ejection.consecutive_failures = 0,
            "consecutive_failures is 0",
        );
        check(|c| c.ejection.base = Duration::ZERO, "ejection.base is 0");
        check(
            |c| c.ejection.max = Duration::from_secs(1),
            "ejection.max 1s is below",
        );
        check(|c| c.pool.idle_timeout = Duration::ZERO, "pool.idle_timeout is 0");
        check(
            |c| c.pool.connect_timeout = Duration::ZERO,
            "pool.connect_timeout 0ns",
        );
        check(|c| c.pool.retry_buffer_bytes = 17 << 20, "retry_buffer_bytes");
        let tls = |cert: &str, key: &str| TlsConfig {
            cert_chain: cert.into(),
            private_key: key.into(),
        };
        check(|c| c.tls = Some(tls("", "k.pem")), "tls.cert_chain is empty");
        check(|c| c.tls = Some(tls("c.pem", "")), "tls.private_key is empty");
        check(|c| c.tls = Some(tls("c.pem", "k.pem")), "");
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let e = EjectionConfig::default();
        let got: Vec<u64> = (1..=8).map(|n| e.backoff(n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(e.backoff(u32::MAX), e.max);
    }

    #[test]
    fn parses_text_durations_and_refuses_unknown_fields() {
        let c: ProxyConfig =
            serde_json::from_str(r#"{"ejection":{"base":"2s"},"pool":{"idle_timeout":"1m"}}"#).unwrap();
        assert_eq!(c.ejection.base, Duration::from_secs(2));
        assert_eq!(c.ejection.consecutive_failures, 5);
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(60));
        let err = serde_json::from_str::<ProxyConfig>(r#"{"pool":{"idle":"1m"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `idle`"), "{err}");
        let back: ProxyConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
