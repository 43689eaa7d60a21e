//! Datapoint constructors shared by the readers.

use corral_model::{Datapoint, Kind, SeriesKey, Stat, Unit};

pub fn gauge(name: &str, unit: Unit, value: f64) -> Datapoint {
    Datapoint::new(SeriesKey::plain(name), Stat::Value, unit, value)
}

pub fn tagged(name: &str, tag: (&str, &str), unit: Unit, value: f64) -> Datapoint {
    Datapoint::new(SeriesKey::new(name, [tag]), Stat::Value, unit, value)
}

pub fn cumulative(name: &str, tag: (&str, &str), unit: Unit, value: f64) -> Datapoint {
    tagged(name, tag, unit, value).with_kind(Kind::Cumulative)
}

/// Rounds to two decimals, as dcos-metrics reported percentages and load averages.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
