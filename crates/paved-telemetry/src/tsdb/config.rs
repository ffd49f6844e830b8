//! `StoreConfig`: the store's step, retention, block length and series cap, validated once.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the store keeps samples. Durations read and write as humantime strings (`"10s"`, `"6h"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Time between samples: every series holds at most one sample per step, at the step's
    /// start. Whole milliseconds, at least 1 ms. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// How long samples are kept; older blocks are dropped whole, so up to one block more is
    /// held. At least one step. Default 6 h.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The time one compressed block covers: a multiple of `step`, at most 4096 steps. Longer
    /// blocks compress a little better; shorter ones free memory sooner. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// Most series one metric may have; samples of further series are dropped and counted in
    /// `paved_tsdb_dropped_samples_total`. At least 1. Default 10,000.
    pub max_series_per_metric: usize,
}

/// A configuration the store cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("telemetry step {0:?} is not a whole number of milliseconds of at least 1ms; use e.g. 10s")]
    Step(Duration),
    #[error("telemetry retention {retention:?} is shorter than the step {step:?}; raise the retention")]
    Retention { retention: Duration, step: Duration },
    #[error(
        "telemetry block {block:?} is not a multiple of the step {step:?} between 1 and 4096 steps; use e.g. 1h"
    )]
    Block { block: Duration, step: Duration },
    #[error("telemetry max_series_per_metric is 0; allow at least 1 series")]
    MaxSeries,
}

/// The most steps one block may cover (offsets are 16-bit; longer blocks also cost more to
/// decode when a query needs only their end).
pub const MAX_BLOCK_STEPS: u64 = 4096;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            step: Duration::from_secs(10),
            retention: Duration::from_secs(6 * 3600),
            block: Duration::from_secs(3600),
            max_series_per_metric: 10_000,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let step = self.step;
        if !step.subsec_nanos().is_multiple_of(1_000_000) || step < Duration::from_millis(1) {
            return Err(ConfigError::Step(step));
        }
        if self.retention < step {
            return Err(ConfigError::Retention {
                retention: self.retention,
                step,
            });
        }
        let steps = self.block.as_nanos() / step.as_nanos();
        if !self.block.as_nanos().is_multiple_of(step.as_nanos())
            || steps == 0
            || steps > u128::from(MAX_BLOCK_STEPS)
        {
            return Err(ConfigError::Block {
                block: self.block,
                step,
            });
        }
        if self.max_series_per_metric == 0 {
            return Err(ConfigError::MaxSeries);
        }
        Ok(())
    }

    /// The step in milliseconds (valid configurations only).
    pub(crate) fn step_ms(&self) -> i64 {
        i64::try_from(self.step.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    /// Steps per block (valid configurations only).
    pub(crate) fn block_steps(&self) -> u64 {
        u64::try_from(self.block.as_millis() / self.step.as_millis().max(1))
            .unwrap_or(MAX_BLOCK_STEPS)
            .max(1)
    }
}

/// Durations as humantime strings.
mod humantime_serde {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e}; use e.g. \"10s\" or \"6h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        let config = StoreConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!((config.step_ms(), config.block_steps()), (10_000, 360));
    }

    #[test]
    fn bad_values_are_named() {
        let with = |f: fn(&mut StoreConfig)| {
            let mut c = StoreConfig::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        assert!(with(|c| c.step = Duration::from_micros(1500)).is_err_and(|e| e.contains("step")));
        assert!(with(|c| c.step = Duration::ZERO).is_err());
        assert!(with(|c| c.retention = Duration::from_secs(1)).is_err_and(|e| e.contains("retention")));
        assert!(with(|c| c.block = Duration::from_secs(15)).is_err_and(|e| e.contains("block")));
        assert!(with(|c| c.block = Duration::from_secs(10 * 5000)).is_err());
        assert!(with(|c| c.max_series_per_metric = 0).is_err());
    }

    #[test]
    fn reads_durations_as_text() {
        let config: StoreConfig =
            serde_json::from_str(r#"{"step": "15s", "retention": "2h", "max_series_per_metric": 5}"#)
                .expect("parses");
        assert_eq!(config.step, Duration::from_secs(15));
        assert_eq!(config.retention, Duration::from_secs(7200));
        assert_eq!(config.block, Duration::from_secs(3600));
        let err = serde_json::from_str::<StoreConfig>(r#"{"stepp": "15s"}"#)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<StoreConfig>(r#"{"step": "soon"}"#)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }
}
