//! `load.*` from `/proc/loadavg`.

use corral_model::{Datapoint, Unit};
use procfs_core::{FromRead, LoadAverage};

use super::error::ParseError;
use super::point::{gauge, round2};

pub fn points(text: &[u8]) -> Result<Vec<Datapoint>, ParseError> {
    let l = LoadAverage::from_read(text)?;
    // The kernel prints two decimals; rounding drops the f32 parse noise (0.52 → 0.5199999…).
    let v = |x: f32| round2(f64::from(x));
    Ok(vec![
        gauge("load.1min", Unit::Count, v(l.one)),
        gauge("load.5min", Unit::Count, v(l.five)),
        gauge("load.15min", Unit::Count, v(l.fifteen)),
    ])
}
