//! Aggregation per CONTRACT §2: one case per row of the table, plus sketches, merging across
//! receive threads, expiry and the series limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_statsd::{parse, Aggregator, AggregatorConfig, FlushState, GaugeSign, Parsed, Refused};
use proptest::prelude::*;

/// Renders a flush as `name{tags}` (tags `k=v` joined by `,`; `@container` first) → value.
type Flushed = BTreeMap<String, f64>;

struct Harness {
    aggs: Vec<Aggregator>,
    flush: FlushState,
    now: u64,
}

impl Harness {
    fn new(threads: usize, config: AggregatorConfig) -> Self {
        let config = Arc::new(config);
        Harness {
            aggs: (0..threads)
                .map(|_| Aggregator::new(config.clone()))
                .collect(),
            flush: FlushState::new(config),
            now: 0,
        }
    }

    fn one() -> Self {
        Self::new(1, AggregatorConfig::default())
    }

    fn send_on(&mut self, thread: usize, lines: &[&str]) {
        assert_eq!(
            self.offer_on(thread, lines),
            Refused::default(),
            "{lines:?}"
        );
    }

    /// Sends `lines` to aggregator `thread`; returns those it refused.
    fn offer_on(&mut self, thread: usize, lines: &[&str]) -> Refused {
        let mut refused = Refused::default();
        for l in lines {
            self.now += 1;
            let added =
                match parse(l.as_bytes()).unwrap_or_else(|r| panic!("{l:?} rejected: {r:?}")) {
                    Parsed::Metric(m) => self.aggs[thread].add(&m, m.container_id, self.now),
                    Parsed::ServiceCheck(sc) => {
                        self.aggs[thread].add_service_check(&sc, sc.container_id, self.now)
                    }
                    Parsed::Event(_) => Ok(()),
                };
            if let Err(e) = added {
                refused.count(e);
            }
        }
        refused
    }

    fn send(&mut self, lines: &[&str]) {
        self.send_on(0, lines)
    }

    fn flush(&mut self) -> Flushed {
        let parts = self.aggs.iter_mut().map(|a| a.take_interval()).collect();
        let out = self.flush.flush(parts);
        let mut m = BTreeMap::new();
        for (container, points) in out.groups {
            // What the v0 API and Kafka see: counters without samples are not emitted.
            for p in points.into_iter().filter(|p| p.in_interval()) {
                let mut tags: Vec<String> = p.key.tags().map(|(k, v)| format!("{k}={v}")).collect();
                if let Some(c) = &container {
                    tags.insert(0, format!("@{c}"));
                }
                let name = if tags.is_empty() {
                    p.name()
                } else {
                    format!("{}{{{}}}", p.name(), tags.join(","))
                };
                assert!(
                    m.insert(name.clone(), p.value).is_none(),
                    "duplicate datapoint {name}"
                );
            }
        }
        m
    }
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn assert_flush(got: &Flushed, want: &[(&str, f64)]) {
    let want: Flushed = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "datapoint names"
    );
    for (k, v) in &want {
        assert!(approx(got[k], *v), "{k}: got {}, want {v}", got[k]);
    }
}

#[test]
fn counter_sums_value_over_rate() {
    let mut h = Harness::one();
    h.send(&["c:1|c", "c:2|c|@0.5", "c:3:4|c", "c:1|c|@2", "c:1|c|@0"]);
    // 1 + 2/0.5 + 3 + 4 + (invalid rates count as 1) 1 + 1
    assert_flush(&h.flush(), &[("c", 14.0)]);
    // Nothing in the next interval: a counter is not emitted.
    assert_flush(&h.flush(), &[]);
}

#[test]
fn counter_zero_is_not_emitted() {
    let mut h = Harness::one();
    h.send(&["z:0|c", "n:5|c", "n:-5|c"]);
    assert_flush(&h.flush(), &[]);
}

#[test]
fn gauge_absolute_delta_and_re_emission() {
    let mut h = Harness::one();
    h.send(&["g:10|g", "g:+5|g", "g:-3|g"]);
    assert_flush(&h.flush(), &[("g", 12.0)]);
    assert_flush(&h.flush(), &[("g", 12.0)]);
    h.send(&["g:+1|g"]);
    assert_flush(&h.flush(), &[("g", 13.0)]);
    h.send(&["g:4|g"]);
    assert_flush(&h.flush(), &[("g", 4.0)]);
}

#[test]
fn gauge_delta_without_prior_value_starts_at_zero() {
    let mut h = Harness::one();
    h.send(&["g:-2|g", "g:+0.5|g"]);
    assert_flush(&h.flush(), &[("g", -1.5)]);
}

#[test]
fn gauge_sign_absolute_reads_signs_as_values() {
    let mut h = Harness::new(
        1,
        AggregatorConfig::new(vec![50.0], GaugeSign::Absolute, 30, 1000),
    );
    h.send(&["g:10|g", "g:-3|g"]);
    assert_flush(&h.flush(), &[("g", -3.0)]);
    h.send(&["g:+4|g"]);
    assert_flush(&h.flush(), &[("g", 4.0)]);
}

#[test]
fn gauge_expires() {
    let mut h = Harness::new(1, AggregatorConfig::new(vec![], GaugeSign::Delta, 3, 1000));
    h.send(&["g:1|g"]);
    assert_flush(&h.flush(), &[("g", 1.0)]);
    assert_flush(&h.flush(), &[("g", 1.0)]);
    assert_flush(&h.flush(), &[("g", 1.0)]);
    assert_flush(&h.flush(), &[]);
    assert_eq!(h.aggs[0].len(), 0, "the aggregator forgot the series too");
    // A new sample starts from scratch.
    h.send(&["g:+2|g"]);
    assert_flush(&h.flush(), &[("g", 2.0)]);
}

#[test]
fn timer_statistics() {
    for ty in ["ms", "h", "d"] {
        let mut h = Harness::one();
        let lines: Vec<String> = (1..=10).rev().map(|i| format!("t:{i}|{ty}")).collect();
        h.send(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        assert_flush(
            &h.flush(),
            &[
                ("t.count", 10.0),
                ("t.sum", 55.0),
                ("t.min", 1.0),
                ("t.max", 10.0),
                ("t.mean", 5.5),
                ("t.median", 5.5),
                ("t.stddev", 8.25f64.sqrt()),
                ("t.p50", 5.0),
                ("t.p75", 8.0),
                ("t.p90", 9.0),
                ("t.p95", 10.0),
                ("t.p99", 10.0),
            ],
        );
    }
}

#[test]
fn timer_odd_median_and_fractional_percentile() {
    let mut h = Harness::new(
        1,
        AggregatorConfig::new(vec![99.9, 0.5], GaugeSign::Delta, 30, 1000),
    );
    h.send(&["t:3:1:2|ms"]);
    let f = h.flush();
    assert_eq!(f["t.median"], 2.0);
    assert_eq!(f["t.p99_9"], 3.0);
    assert_eq!(f["t.p0_5"], 1.0);
    assert_eq!(f["t.count"], 3.0);
}

#[test]
fn timer_sample_rate_scales_count_only() {
    let mut h = Harness::one();
    h.send(&["t:10|ms|@0.1", "t:20|ms|@0.5"]);
    let f = h.flush();
    assert!(approx(f["t.count"], 12.0));
    assert_eq!(f["t.sum"], 30.0);
    assert_eq!(f["t.mean"], 15.0);
    assert_eq!(f["t.min"], 10.0);
    assert_eq!(f["t.p99"], 20.0);
}

#[test]
fn packed_values_with_empty_slots() {
    let mut h = Harness::one();
    h.send(&["t:1::2:|ms", "c:1:1::1|c"]);
    let f = h.flush();
    assert_eq!(f["t.count"], 2.0);
    assert_eq!(f["c"], 3.0);
}

#[test]
fn set_counts_distinct_members() {
    let mut h = Harness::one();
    h.send(&["s:a|s", "s:b|s", "s:a|s", "s:1:2|s", "s:1|s"]);
    assert_flush(&h.flush(), &[("s", 4.0)]);
    assert_flush(&h.flush(), &[]);
}

#[test]
fn tags_order_and_duplicates_do_not_split_a_series() {
    let mut h = Harness::one();
    h.send(&[
        "c:1|c|#b:2,a:1",
        "c:1|c|#a:1,b:2,a:1",
        "c:1|c|#a:1|#b:2",
        "c:1|c|#a:1",
    ]);
    assert_flush(&h.flush(), &[("c{a=1,b=2}", 3.0), ("c{a=1}", 1.0)]);
}

#[test]
fn bare_tags_and_colons_in_values() {
    let mut h = Harness::one();
    h.send(&[
        "c:1|c|#prod,url:http://x:80",
        "c:1|c|#url:http://x:80,prod:",
    ]);
    assert_flush(&h.flush(), &[("c{prod=,url=http://x:80}", 2.0)]);
}

#[test]
fn containers_are_separate_series() {
    let mut h = Harness::one();
    h.send(&["c:1|c|c:abc", "c:2|c", "c:3|c|c:abc"]);
    assert_flush(&h.flush(), &[("c", 2.0), ("c{@abc}", 4.0)]);
}

/// A series is (container, name, tags): the first type of an interval holds for the interval,
/// and a line of another type then is refused, not published as a second `x`.
#[test]
fn a_series_has_one_type_per_interval() {
    let mut h = Harness::one();
    let refused = h.offer_on(
        0,
        &["x:1|c", "x:5|g", "x:7|ms", "x:a|s", "x:2|c", "_sc|x|1"],
    );
    assert_eq!(
        refused,
        Refused {
            series_limit: 0,
            type_mismatch: 4
        }
    );
    assert_flush(&h.flush(), &[("x", 3.0)]);
    // The same name with tags, or in a container, is another series.
    h.send(&["x:5|g|#a:b", "x:5|ms|c:ctr"]);
    let f = h.flush();
    assert_eq!(f["x{a=b}"], 5.0);
    assert_eq!(f["x.count{@ctr}"], 1.0);
}

/// At an interval boundary a series may change type; what was kept of the old type (a gauge's
/// value, a counter's running total) ends there.
#[test]
fn a_series_changes_type_between_intervals() {
    let mut h = Harness::one();
    h.send(&["x:5|g"]);
    assert_flush(&h.flush(), &[("x", 5.0)]);
    h.send(&["x:2|c"]);
    assert_flush(&h.flush(), &[("x", 2.0)]);
    // Neither the gauge nor the counter (0 this interval) is left.
    let parts = h.aggs.iter_mut().map(|a| a.take_interval()).collect();
    let out = h.flush.flush(parts);
    assert_eq!(out.datapoints(), 1, "{:?}", out.groups);
    assert_eq!(h.flush.gauges(), 0);
    h.send(&["x:3|ms"]);
    assert_flush(
        &h.flush(),
        &[
            ("x.count", 1.0),
            ("x.max", 3.0),
            ("x.mean", 3.0),
            ("x.median", 3.0),
            ("x.min", 3.0),
            ("x.p50", 3.0),
            ("x.p75", 3.0),
            ("x.p90", 3.0),
            ("x.p95", 3.0),
            ("x.p99", 3.0),
            ("x.stddev", 0.0),
            ("x.sum", 3.0),
        ],
    );
    assert_eq!(
        h.flush.counters(),
        0,
        "the counter's total ended with its type"
    );
    assert_eq!(h.aggs[0].len(), 1);
}

/// Receive threads that see one series with different types in the same interval: the first
/// thread's type is kept, the other's partial is dropped and counted.
#[test]
fn threads_with_different_types_keep_one() {
    let mut h = Harness::new(2, AggregatorConfig::default());
    h.send_on(0, &["x:1|c"]);
    h.send_on(1, &["x:5|g", "y:1|c"]);
    assert_flush(&h.flush(), &[("x", 1.0), ("y", 1.0)]);
    assert_eq!(h.flush.type_conflicts(), 1);
    assert_eq!(h.flush.gauges(), 0);
    h.send_on(1, &["x:5|g"]);
    assert_flush(&h.flush(), &[("x", 5.0)]);
    assert_eq!(h.flush.type_conflicts(), 1);
}

#[test]
fn service_check_becomes_a_gauge() {
    let mut h = Harness::one();
    h.send(&["_sc|db.up|2|#env:prod", "_e{1,1}:a|b"]);
    assert_flush(&h.flush(), &[("db.up{env=prod}", 2.0)]);
}

#[test]
fn sketch_takes_over_past_ten_thousand_samples() {
    let mut h = Harness::one();
    let lines: Vec<String> = (1..=50_000).map(|i| format!("t:{i}|ms")).collect();
    h.send(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let f = h.flush();
    assert_eq!(f["t.count"], 50_000.0);
    assert_eq!(f["t.sum"], (50_000.0 * 50_001.0) / 2.0);
    assert_eq!(f["t.min"], 1.0);
    assert_eq!(f["t.max"], 50_000.0);
    for (name, exact) in [
        ("t.p50", 25_000.0),
        ("t.p90", 45_000.0),
        ("t.p99", 49_500.0),
        ("t.median", 25_000.5),
    ] {
        let got = f[name];
        assert!(
            (got - exact).abs() <= exact * 0.01,
            "{name}: {got} vs {exact}"
        );
    }
    let sd = f["t.stddev"];
    let exact_sd = ((50_000f64 * 50_000.0 - 1.0) / 12.0).sqrt();
    assert!(
        (sd - exact_sd).abs() / exact_sd < 1e-6,
        "{sd} vs {exact_sd}"
    );
}

#[test]
fn threads_merge_into_one_series() {
    let mut h = Harness::new(2, AggregatorConfig::default());
    h.send_on(0, &["c:1|c", "s:a|s", "t:1|ms", "g:5|g"]);
    h.send_on(1, &["c:2|c", "s:a|s", "s:b|s", "t:3|ms", "g:+1|g"]);
    let f = h.flush();
    assert_eq!(f["c"], 3.0);
    assert_eq!(f["s"], 2.0);
    assert_eq!(f["t.count"], 2.0);
    assert_eq!(f["t.median"], 2.0);
    assert_eq!(f["g"], 6.0);
    // The later absolute value wins across threads.
    h.send_on(1, &["g:7|g"]);
    h.send_on(0, &["g:9|g"]);
    assert_eq!(h.flush()["g"], 9.0);
}

#[test]
fn threads_merge_past_the_sketch_threshold() {
    let mut h = Harness::new(2, AggregatorConfig::default());
    let a: Vec<String> = (1..=8_000).map(|i| format!("t:{i}|ms")).collect();
    let b: Vec<String> = (8_001..=16_000).map(|i| format!("t:{i}|ms")).collect();
    h.send_on(0, &a.iter().map(String::as_str).collect::<Vec<_>>());
    h.send_on(1, &b.iter().map(String::as_str).collect::<Vec<_>>());
    let f = h.flush();
    assert_eq!(f["t.count"], 16_000.0);
    assert!((f["t.p50"] - 8_000.0).abs() <= 80.0);
}

#[test]
fn series_limit_drops_new_series_only() {
    let config = Arc::new(AggregatorConfig::new(vec![], GaugeSign::Delta, 30, 2));
    let mut a = Aggregator::new(config.clone());
    let add = |a: &mut Aggregator, l: &str| match parse(l.as_bytes()).unwrap() {
        Parsed::Metric(m) => a.add(&m, None, 0),
        _ => unreachable!(),
    };
    assert!(add(&mut a, "a:1|c").is_ok());
    assert!(add(&mut a, "b:1|c").is_ok());
    assert!(add(&mut a, "c:1|c").is_err());
    assert!(add(&mut a, "a:1|c").is_ok(), "existing series keep working");
    assert_eq!(a.series_dropped(), 1);
    drop(a);
    assert_eq!(config.series.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn idle_series_are_forgotten_after_expiry() {
    let mut h = Harness::new(1, AggregatorConfig::new(vec![], GaugeSign::Delta, 2, 1000));
    h.send(&["c:1|c", "t:1|ms", "s:x|s"]);
    h.flush();
    assert_eq!(h.aggs[0].len(), 3);
    h.flush();
    assert_eq!(h.aggs[0].len(), 3);
    h.flush();
    assert_eq!(h.aggs[0].len(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn counter_sums_are_exact(values in prop::collection::vec(-1_000_000i64..1_000_000, 1..200)) {
        let mut h = Harness::one();
        let lines: Vec<String> = values.iter().map(|v| format!("c:{v}|c")).collect();
        h.send(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let sum: i64 = values.iter().sum();
        let f = h.flush();
        if sum == 0 {
            prop_assert!(!f.contains_key("c"));
        } else {
            prop_assert_eq!(f["c"], sum as f64);
        }
    }

    #[test]
    fn set_counts_are_exact(members in prop::collection::vec("[a-z0-9]{1,6}", 1..300), threads in 1usize..4) {
        let mut h = Harness::new(threads, AggregatorConfig::default());
        for (i, m) in members.iter().enumerate() {
            let line = format!("s:{m}|s");
            h.send_on(i % threads, &[line.as_str()]);
        }
        let distinct: std::collections::HashSet<_> = members.iter().collect();
        prop_assert_eq!(h.flush()["s"], distinct.len() as f64);
    }

    #[test]
    fn percentile_is_a_sample_with_at_least_p_percent_below(
        values in prop::collection::vec(-1e6f64..1e6, 1..500),
        p in 1u32..=100,
    ) {
        let mut h = Harness::new(1, AggregatorConfig::new(vec![p as f64], GaugeSign::Delta, 30, 1000));
        let lines: Vec<String> = values.iter().map(|v| format!("t:{v}|ms")).collect();
        h.send(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let f = h.flush();
        let got = f[&format!("t.p{p}")];
        prop_assert!(values.contains(&got), "p{} = {} is not a sample", p, got);
        let at_or_below = values.iter().filter(|v| **v <= got).count() as f64;
        prop_assert!(at_or_below * 100.0 >= p as f64 * values.len() as f64);
        // And it is the smallest such sample.
        let below = values.iter().filter(|v| **v < got).count() as f64;
        prop_assert!(below * 100.0 < p as f64 * values.len() as f64);
    }
}

#[test]
fn counters_carry_a_running_total_for_cumulative_exposition() {
    use corral_model::Kind;
    let mut h = Harness::new(2, AggregatorConfig::new(vec![], GaugeSign::Delta, 3, 1000));
    let flush = |h: &mut Harness| {
        let parts = h.aggs.iter_mut().map(|a| a.take_interval()).collect();
        let out = h.flush.flush(parts);
        out.groups
            .into_iter()
            .flat_map(|(_, p)| p)
            .find(|p| p.key.name() == "c")
            .map(|p| {
                assert_eq!(p.kind, Kind::Counter);
                (p.value, p.total)
            })
    };
    h.send_on(0, &["c:2|c", "c:1|c|@0.5"]);
    assert_eq!(flush(&mut h), Some((4.0, 4.0)));
    // No samples: still there for cumulative consumers, with 0 for the interval.
    assert_eq!(flush(&mut h), Some((0.0, 4.0)));
    // Another receive thread sees the series: one total all the same.
    h.send_on(1, &["c:1|c"]);
    assert_eq!(flush(&mut h), Some((1.0, 5.0)));
    h.send_on(0, &["c:2|c"]);
    h.send_on(1, &["c:3|c"]);
    assert_eq!(flush(&mut h), Some((5.0, 10.0)));
    // Expired after three flushes without samples.
    assert_eq!(flush(&mut h), Some((0.0, 10.0)));
    assert_eq!(flush(&mut h), Some((0.0, 10.0)));
    assert_eq!(flush(&mut h), None);
}

#[test]
fn containers_come_and_go() {
    let mut h = Harness::new(1, AggregatorConfig::new(vec![], GaugeSign::Delta, 1, 1000));
    h.send(&["c:1|c|c:a", "c:1|c|c:b", "d:1|c|c:a"]);
    assert_flush(
        &h.flush(),
        &[("c{@a}", 1.0), ("c{@b}", 1.0), ("d{@a}", 1.0)],
    );
    // Nothing for one interval: every series (and so every container) expires.
    h.flush();
    assert_eq!(h.aggs[0].len(), 0);
    // The freed container slots are reused without mixing series up.
    h.send(&["c:2|c|c:b", "c:3|c|c:z", "c:4|c"]);
    assert_flush(&h.flush(), &[("c", 4.0), ("c{@b}", 2.0), ("c{@z}", 3.0)]);
}

/// A line from a small space of series: new and known series, containers (some first seen in
/// the middle of a batch), types, tags in any order, and the series limit.
fn arb_line() -> impl Strategy<Value = String> {
    (0u8..6, 0u8..5, 0u8..4, prop::bool::ANY, -50i32..50, 0u8..4).prop_map(
        |(name, kind, container, tagged, v, rate)| {
            let kind = ["c", "g", "ms", "h", "s"][kind as usize];
            let value = match kind {
                "g" if v < 0 => format!("{v}"),
                "g" if v % 3 == 0 => format!("+{v}"),
                _ => format!("{}", v.abs()),
            };
            let mut line = format!("m{name}:{value}|{kind}");
            if rate == 1 {
                line.push_str("|@0.5");
            }
            if tagged {
                line.push_str(if v % 2 == 0 {
                    "|#b:2,a:1"
                } else {
                    "|#a:1,b:2,a:1"
                });
            }
            if container > 0 {
                line.push_str(&format!("|c:ctr{container}"));
            }
            line
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Batched lookups aggregate exactly as one line at a time, over several intervals (with
    /// expiry, which re-indexes the series) and up to the series limit.
    #[test]
    fn add_many_equals_add(
        intervals in prop::collection::vec(
            (prop::collection::vec(arb_line(), 0..90), prop::collection::vec(1usize..=corral_statsd::aggregate::BATCH, 8)),
            1..5,
        ),
        max_series in 3usize..40,
    ) {
        let config = || Arc::new(AggregatorConfig::new(vec![50.0, 90.0], GaugeSign::Delta, 2, max_series));
        let (one_config, many_config) = (config(), config());
        let mut one = Aggregator::new(one_config.clone());
        let mut many = Aggregator::new(many_config.clone());
        let mut one_flush = FlushState::new(one_config.clone());
        let mut many_flush = FlushState::new(many_config.clone());
        for (lines, sizes) in &intervals {
            let parsed: Vec<_> = lines
                .iter()
                .map(|l| match parse(l.as_bytes()) {
                    Ok(Parsed::Metric(m)) => m,
                    other => panic!("{l}: {other:?}"),
                })
                .collect();
            let mut dropped_one = Refused::default();
            for m in &parsed {
                if let Err(e) = one.add(m, m.container_id, 7) {
                    dropped_one.count(e);
                }
            }
            let mut dropped_many = Refused::default();
            let mut rest = &parsed[..];
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).min(rest.len());
                let batch: Vec<_> = rest[..n].iter().map(|m| (m.clone(), m.container_id)).collect();
                dropped_many += many.add_many(&batch, 7);
                rest = &rest[n..];
            }
            prop_assert_eq!(dropped_one, dropped_many);
            prop_assert_eq!(one.len(), many.len());
            let render = |out: corral_statsd::FlushOutput| {
                // One datapoint per statistic of a (container, name, tags) series, whatever
                // types its lines had.
                let mut ids = std::collections::HashSet::new();
                for (c, points) in &out.groups {
                    for p in points {
                        assert!(ids.insert((c.clone(), p.key.encoded().to_string(), p.stat)), "{c:?} {:?} twice", p.key.encoded());
                    }
                }
                let mut v: Vec<String> = out
                    .groups
                    .into_iter()
                    .flat_map(|(c, points)| {
                        points.into_iter().map(move |p| {
                            format!("{c:?} {} {:?} {:?} {} {}", p.key.encoded(), p.stat, p.kind, p.value, p.total)
                        })
                    })
                    .collect();
                v.sort();
                v
            };
            let a = render(one_flush.flush(vec![one.take_interval()]));
            let b = render(many_flush.flush(vec![many.take_interval()]));
            prop_assert_eq!(a, b);
            prop_assert_eq!(
                one_config.series.load(std::sync::atomic::Ordering::Relaxed),
                many_config.series.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
}

#[test]
fn stddev_is_exact_when_sketch_and_exact_threads_merge() {
    // Thread 0 passes the exact limit, thread 1 stays under it, thread 2 passes it too.
    let mut h = Harness::new(3, AggregatorConfig::default());
    let spans = [
        (0usize, 1..=15_000),
        (1, 15_001..=18_000),
        (2, 18_001..=30_000),
    ];
    for (thread, span) in spans {
        let lines: Vec<String> = span.map(|i| format!("t:{}|ms", i % 977)).collect();
        h.send_on(
            thread,
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    let all: Vec<f64> = (1..=30_000).map(|i| (i % 977) as f64).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let sd = (all.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / all.len() as f64).sqrt();
    let f = h.flush();
    assert_eq!(f["t.count"], 30_000.0);
    assert!(approx(f["t.mean"], mean), "{} vs {mean}", f["t.mean"]);
    assert!(
        (f["t.stddev"] - sd).abs() / sd < 1e-9,
        "{} vs {sd}",
        f["t.stddev"]
    );
}
