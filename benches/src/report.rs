//! RESULT and RATIO lines.

use std::fmt;
use std::time::Duration;

use crate::cli::{Backend, Workload};

/// Which implementation ran a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// annals' repository, stores and projection runner.
    Annals,
    /// annals retrying conflicts at once, without backoff (W6's "before").
    AnnalsNoBackoff,
    /// Hand-written sqlx.
    Raw,
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Impl::Annals => "annals",
            Impl::AnnalsNoBackoff => "annals-no-backoff",
            Impl::Raw => "raw",
        })
    }
}

/// One timed run.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Who ran it.
    pub imp: Impl,
    /// Where.
    pub backend: Backend,
    /// What.
    pub workload: Workload,
    /// Commands (W1, W2, W5, W6) or events (W3, W4, W7) processed.
    pub n: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Extra `key=value` pairs (conflicts, tasks).
    pub extra: Vec<(&'static str, u64)>,
}

impl Measurement {
    /// Per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            count_f64(self.n) / secs
        } else {
            f64::INFINITY
        }
    }
}

pub fn count_f64(n: u64) -> f64 {
    // Counts stay far below 2^53, where f64 is exact.
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    f64::from(n)
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RESULT impl={} backend={} workload={} n={} secs={:.3} rate={:.0}",
            self.imp,
            self.backend,
            self.workload,
            self.n,
            self.elapsed.as_secs_f64(),
            self.rate()
        )?;
        for (key, value) in &self.extra {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

/// The RATIO lines: for each backend and workload measured by both implementations,
/// annals' time over raw's (above 1: annals is slower).
pub fn ratios(results: &[Measurement]) -> Vec<String> {
    let mut lines = Vec::new();
    for annals in results.iter().filter(|m| m.imp == Impl::Annals) {
        let raw = results.iter().find(|m| {
            m.imp == Impl::Raw && m.backend == annals.backend && m.workload == annals.workload
        });
        if let Some(raw) = raw {
            let ratio = annals.elapsed.as_secs_f64() / raw.elapsed.as_secs_f64().max(1e-9);
            lines.push(format!(
                "RATIO backend={} workload={} annals/raw={ratio:.2}",
                annals.backend, annals.workload
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(imp: Impl, workload: Workload, millis: u64) -> Measurement {
        Measurement {
            imp,
            backend: Backend::Sqlite,
            workload,
            n: 1_000,
            elapsed: Duration::from_millis(millis),
            extra: vec![("conflicts", 0)],
        }
    }

    #[test]
    fn lines_have_the_documented_shape() {
        assert_eq!(
            m(Impl::Annals, Workload::W2, 500).to_string(),
            "RESULT impl=annals backend=sqlite workload=W2 n=1000 secs=0.500 rate=2000 conflicts=0"
        );
        let results = [
            m(Impl::Annals, Workload::W1, 300),
            m(Impl::Raw, Workload::W1, 200),
            m(Impl::Annals, Workload::W3, 100),
        ];
        assert_eq!(
            ratios(&results),
            ["RATIO backend=sqlite workload=W1 annals/raw=1.50"]
        );
    }
}
