//! `cpu.*` percentages from two samples of `/proc/stat`, and `cpu.cores` from `/proc/cpuinfo`.
//!
//! Definitions (those of dcos-metrics, which used gopsutil's `TimesStat`):
//! - `cpu.user` is the `user` column alone: nice time is not included (it counts in the total
//!   only). `user` already contains guest time, so `guest`/`guest_nice` are not added again.
//! - `cpu.wait` is `iowait`.
//! - the total is user + nice + system + idle + iowait + irq + softirq + steal.
//! - `cpu.total` is `cpu.user + cpu.system` (as shown, after rounding).

use corral_model::{Datapoint, Unit};
use procfs_core::{CpuInfo, ExplicitSystemInfo, FromBufRead, FromBufReadSI, KernelStats};

use super::error::ParseError;
use super::point::{gauge, round2};

/// Aggregate CPU time of all CPUs, in clock ticks since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    fn delta(&self, earlier: &CpuTimes) -> CpuTimes {
        // iowait may go down (see proc(5)); a decrease counts as no time.
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    pub fn total(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
            .saturating_add(self.steal)
    }
}

/// The aggregate `cpu` line of `/proc/stat`.
pub fn parse_stat(text: &[u8]) -> Result<CpuTimes, ParseError> {
    // Only tick counts are used, so the tick rate given here does not matter.
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let stats = KernelStats::from_buf_read(text, &info)?;
    let t = stats.total;
    Ok(CpuTimes {
        user: t.user,
        nice: t.nice,
        system: t.system,
        idle: t.idle,
        iowait: t.iowait.unwrap_or(0),
        irq: t.irq.unwrap_or(0),
        softirq: t.softirq.unwrap_or(0),
        steal: t.steal.unwrap_or(0),
    })
}

/// Percentages of the time between two samples, rounded to two decimals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuUsage {
    pub user: f64,
    pub system: f64,
    pub idle: f64,
    pub wait: f64,
    pub total: f64,
}

/// `None` when no tick elapsed between the samples.
pub fn usage(earlier: &CpuTimes, later: &CpuTimes) -> Option<CpuUsage> {
    let d = later.delta(earlier);
    let total = d.total();
    if total == 0 {
        return None;
    }
    let pct = |ticks: u64| round2(100.0 * ticks as f64 / total as f64).max(0.0);
    let user = pct(d.user);
    let system = pct(d.system);
    Some(CpuUsage {
        user,
        system,
        idle: pct(d.idle),
        wait: pct(d.iowait),
        total: round2(user + system),
    })
}

pub fn usage_points(u: &CpuUsage) -> Vec<Datapoint> {
    vec![
        gauge("cpu.total", Unit::Percent, u.total),
        gauge("cpu.user", Unit::Percent, u.user),
        gauge("cpu.system", Unit::Percent, u.system),
        gauge("cpu.idle", Unit::Percent, u.idle),
        gauge("cpu.wait", Unit::Percent, u.wait),
    ]
}

/// The number of logical CPUs: `processor` entries of `/proc/cpuinfo`.
pub fn cores(text: &[u8]) -> Result<usize, ParseError> {
    let info = CpuInfo::from_buf_read(text)?;
    let n = (0..info.num_cores())
        .filter(|&i| info.get_field(i, "processor").is_some())
        .count();
    if n == 0 {
        return Err(ParseError("no processor entries".into()));
    }
    Ok(n)
}

pub fn cores_points(n: usize) -> Vec<Datapoint> {
    vec![gauge("cpu.cores", Unit::Count, n as f64)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(user: u64, nice: u64, system: u64, idle: u64, iowait: u64) -> CpuTimes {
        CpuTimes {
            user,
            nice,
            system,
            idle,
            iowait,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn usage_is_the_share_of_elapsed_ticks() {
        let a = times(100, 0, 50, 1000, 10);
        let b = times(130, 10, 60, 1050, 10);
        // Δ: user 30, nice 10, system 10, idle 50, iowait 0 → total 100.
        let u = usage(&a, &b).unwrap();
        assert_eq!(
            u,
            CpuUsage {
                user: 30.0,
                system: 10.0,
                idle: 50.0,
                wait: 0.0,
                total: 40.0
            }
        );
    }

    #[test]
    fn no_elapsed_ticks_gives_no_usage_and_decreases_count_as_zero() {
        let a = times(100, 0, 50, 1000, 10);
        assert_eq!(usage(&a, &a), None);
        let b = times(110, 0, 50, 1010, 5);
        let u = usage(&a, &b).unwrap();
        assert_eq!((u.user, u.idle, u.wait), (50.0, 50.0, 0.0));
    }

    #[test]
    fn cores_needs_processor_entries() {
        assert_eq!(cores(b"processor\t: 0\nmodel name\t: x\n").unwrap(), 1);
        assert_eq!(
            cores(b"processor\t: 0\nflags\t: a\n\nprocessor\t: 1\nflags\t: a\n").unwrap(),
            2
        );
        assert!(cores(b"garbage\n").is_err());
        assert!(cores(b"").is_err());
    }
}
