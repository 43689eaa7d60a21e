//! Sinks: Kafka (Avro `MetricList` container files per message), or rotating Avro files
//! under `data_dir/avro/` when no brokers are configured.

pub mod avro;
pub mod files;
pub mod kafka;
pub mod spool;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::outputs::Sink;
use crate::telemetry::Telemetry;

pub use avro::MetricList;
pub use files::{AvroFileSink, FileOptions};
pub use kafka::{KafkaOptions, KafkaSink};

/// The sinks the configuration asks for.
pub fn start(config: &Config, telemetry: &Arc<Telemetry>) -> Result<Vec<Arc<dyn Sink>>> {
    let k = &config.kafka;
    if k.brokers.is_empty() {
        let opts = FileOptions::new(
            config.data_dir.join("avro"),
            k.avro_codec,
            k.spool_max_bytes,
        );
        tracing::info!(dir = %opts.dir.display(), "no Kafka brokers configured: writing Avro files");
        let sink: Arc<dyn Sink> = AvroFileSink::start(opts, telemetry)?;
        return Ok(vec![sink]);
    }
    let opts = KafkaOptions::from_config(k, &config.data_dir);
    tracing::info!(brokers = %k.brokers.join(","), spool = %opts.spool_dir.display(), "publishing to Kafka");
    let sink: Arc<dyn Sink> = KafkaSink::start(opts, telemetry)?;
    Ok(vec![sink])
}

/// `corral avro-dump`: prints the MetricLists of a spool segment or an Avro container file as
/// JSON lines. What is readable is printed even when the file is damaged; the damage is then
/// the error.
pub fn avro_dump(path: &Path, out: &mut dyn Write) -> Result<()> {
    let mut print = |lists: Vec<MetricList>| -> Result<()> {
        for l in lists {
            serde_json::to_writer(&mut *out, &l)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    if spool::is_segment_file(path).context("cannot read")? {
        let (records, problems) = spool::read_segment_file(path).context("cannot read")?;
        for r in records {
            print(avro::read_ocf(&r.payload[..]).with_context(|| {
                format!(
                    "spooled message for topic {} holds no valid MetricLists",
                    r.topic
                )
            })?)?;
        }
        if !problems.is_empty() {
            bail!("corrupt spool segment: {}", problems.join("; "));
        }
        return Ok(());
    }
    let data = std::fs::read(path).context("cannot read")?;
    let Some(ext) = avro::ocf_extent(&data) else {
        bail!("neither an Avro container file nor a Corral spool segment");
    };
    print(avro::read_ocf(&data[..ext.complete])?)?;
    if ext.complete < data.len() {
        bail!(
            "truncated or corrupt after byte {} of {} (a file still being written, or cut short)",
            ext.complete,
            data.len()
        );
    }
    Ok(())
}
