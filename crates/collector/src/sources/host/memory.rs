//! `memory.*` and `swap.*` from `/proc/meminfo`, in bytes.

use corral_model::{Datapoint, Unit};
use procfs_core::{FromBufRead, Meminfo};

use super::error::ParseError;
use super::point::gauge;

pub fn points(text: &[u8]) -> Result<Vec<Datapoint>, ParseError> {
    // procfs converts the `kB` (KiB) values to bytes.
    let m = Meminfo::from_buf_read(text)?;
    let b = |v: u64| v as f64;
    Ok(vec![
        gauge("memory.total", Unit::Bytes, b(m.mem_total)),
        gauge("memory.free", Unit::Bytes, b(m.mem_free)),
        gauge("memory.buffers", Unit::Bytes, b(m.buffers)),
        gauge("memory.cached", Unit::Bytes, b(m.cached)),
        gauge("swap.total", Unit::Bytes, b(m.swap_total)),
        gauge("swap.free", Unit::Bytes, b(m.swap_free)),
        gauge(
            "swap.used",
            Unit::Bytes,
            b(m.swap_total.saturating_sub(m.swap_free)),
        ),
    ])
}
