//! `system.uptime` from `/proc/uptime`: whole seconds since boot.
//!
//! dcos-metrics computed now − `btime`; `/proc/uptime` gives the same without depending on the
//! wall clock being right.

use corral_model::{Datapoint, Unit};
use procfs_core::{FromRead, Uptime};

use super::error::ParseError;
use super::point::gauge;

pub fn points(text: &[u8]) -> Result<Vec<Datapoint>, ParseError> {
    let u = Uptime::from_read(text)?;
    if !u.uptime.is_finite() || u.uptime < 0.0 {
        return Err(ParseError(format!("bad uptime {}", u.uptime)));
    }
    Ok(vec![gauge("system.uptime", Unit::Count, u.uptime.trunc())])
}
