//! `network.*` per interface (including `lo`) from `/proc/net/dev`: counters since the
//! interface came up, so they are cumulative.

use corral_model::{Datapoint, Unit};
use procfs_core::net::InterfaceDeviceStatus;
use procfs_core::FromBufRead;

use super::error::ParseError;
use super::point::cumulative;

pub fn points(text: &[u8]) -> Result<Vec<Datapoint>, ParseError> {
    let devs = InterfaceDeviceStatus::from_buf_read(text)?;
    let mut out = Vec::with_capacity(devs.0.len() * 8);
    for d in devs.0.values() {
        let tag = ("interface", d.name.as_str());
        let mut push =
            |name: &str, unit: Unit, v: u64| out.push(cumulative(name, tag, unit, v as f64));
        push("network.in", Unit::Bytes, d.recv_bytes);
        push("network.out", Unit::Bytes, d.sent_bytes);
        push("network.in.packets", Unit::Count, d.recv_packets);
        push("network.out.packets", Unit::Count, d.sent_packets);
        push("network.in.dropped", Unit::Count, d.recv_drop);
        push("network.out.dropped", Unit::Count, d.sent_drop);
        push("network.in.errors", Unit::Count, d.recv_errs);
        push("network.out.errors", Unit::Count, d.sent_errs);
    }
    Ok(out)
}
