//! Sinks: Kafka (Avro `MetricList` container files per message), or rotating Avro files
//! under `data_dir/avro/` when no brokers are configured.
//!
//! [`ConfiguredSink`] is the one the `[kafka]` section asks for. A reload hands it the new
//! section: the running sink takes new settings in place, or, when `kafka.brokers` goes from
//! empty to set or back, the other kind of sink is started, put in the outputs in place of the
//! running one, and the running one is stopped. The Kafka spool (`data_dir/spool/`) and the
//! Avro files (`data_dir/avro/`) are separate directories: a Kafka sink stopped this way keeps
//! what it could not deliver in its spool, and sends it when brokers are configured again.

pub mod avro;
pub mod files;
pub mod kafka;
pub mod spool;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{Config, KafkaConfig};
use crate::outputs::{Outputs, Sink};
use crate::telemetry::Telemetry;

pub use avro::MetricList;
pub use files::{AvroFileSink, FileOptions};
pub use kafka::{KafkaOptions, KafkaSink};

/// How long a Kafka sink replaced by Avro files may go on delivering before it stops; what is
/// left stays in its spool.
const KAFKA_RETIRE: Duration = Duration::from_secs(5);

/// The running sink of either kind.
enum Active {
    Kafka(Arc<KafkaSink>),
    Files(Arc<AvroFileSink>),
}

impl Active {
    fn start(k: &KafkaConfig, data_dir: &Path, telemetry: &Arc<Telemetry>) -> Result<Active> {
        if k.brokers.is_empty() {
            let opts = file_options(k, data_dir);
            tracing::info!(dir = %opts.dir.display(), "no Kafka brokers configured: writing Avro files");
            return Ok(Active::Files(AvroFileSink::start(opts, telemetry)?));
        }
        let opts = KafkaOptions::from_config(k, data_dir);
        tracing::info!(brokers = %k.brokers.join(","), spool = %opts.spool_dir.display(), "publishing to Kafka");
        Ok(Active::Kafka(KafkaSink::start(opts, telemetry)?))
    }

    fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Active::Kafka(k) => k.clone(),
            Active::Files(f) => f.clone(),
        }
    }
}

fn file_options(k: &KafkaConfig, data_dir: &Path) -> FileOptions {
    FileOptions::new(data_dir.join("avro"), k.avro_codec, k.spool_max_bytes)
}

/// What a reload did to the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkChange {
    /// The `[kafka]` section is the same.
    Unchanged,
    /// The running sink took the new settings.
    Reconfigured,
    /// Kafka replaced the Avro files.
    ToKafka,
    /// Avro files replaced Kafka.
    ToFiles,
}

impl SinkChange {
    /// For the `configuration reloaded` log line.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkChange::Unchanged => "unchanged",
            SinkChange::Reconfigured => "reconfigured",
            SinkChange::ToKafka => "switched to Kafka",
            SinkChange::ToFiles => "switched to Avro files",
        }
    }
}

/// The sink the `[kafka]` section asks for: Kafka when brokers are set, else Avro files.
pub struct ConfiguredSink {
    config: KafkaConfig,
    data_dir: PathBuf,
    telemetry: Arc<Telemetry>,
    active: Active,
}

impl ConfiguredSink {
    pub fn start(config: &Config, telemetry: &Arc<Telemetry>) -> Result<ConfiguredSink> {
        Ok(ConfiguredSink {
            active: Active::start(&config.kafka, &config.data_dir, telemetry)?,
            config: config.kafka.clone(),
            data_dir: config.data_dir.clone(),
            telemetry: telemetry.clone(),
        })
    }

    /// The sinks to hand to [`Outputs`].
    pub fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        vec![self.active.sink()]
    }

    /// Applies a new `[kafka]` section; `outputs` must be the outputs holding
    /// [`ConfiguredSink::sinks`]. On an error (librdkafka refuses the settings, the other
    /// kind of sink cannot start) the running sink is left as it was.
    pub async fn reconfigure(
        &mut self,
        new: &KafkaConfig,
        outputs: &Outputs,
    ) -> Result<SinkChange> {
        if *new == self.config {
            return Ok(SinkChange::Unchanged);
        }
        let change = match (&self.active, new.brokers.is_empty()) {
            (Active::Kafka(sink), false) => {
                sink.reconfigure(KafkaOptions::from_config(new, &self.data_dir))
                    .await?;
                SinkChange::Reconfigured
            }
            (Active::Files(sink), true) => {
                sink.reconfigure(file_options(new, &self.data_dir));
                SinkChange::Reconfigured
            }
            (Active::Kafka(_), true) | (Active::Files(_), false) => {
                // Opening the spool reads it through: not on an async worker.
                let (k, dir, t) = (new.clone(), self.data_dir.clone(), self.telemetry.clone());
                let next = tokio::task::spawn_blocking(move || Active::start(&k, &dir, &t))
                    .await
                    .context("the sink start was cancelled")?
                    .context("cannot start the sink that kafka.brokers now asks for")?;
                outputs.replace_sinks(vec![next.sink()]);
                let old = std::mem::replace(&mut self.active, next);
                match old {
                    Active::Kafka(k) => {
                        tracing::warn!(
                            pending = k.pending(),
                            "kafka.brokers is now empty: writing Avro files; what Kafka has not \
                             acknowledged stays in the spool until brokers are configured again"
                        );
                        k.shutdown(KAFKA_RETIRE).await;
                        SinkChange::ToFiles
                    }
                    Active::Files(f) => {
                        tracing::info!("kafka.brokers is now set: the Avro files are closed");
                        f.shutdown(Duration::ZERO).await;
                        SinkChange::ToKafka
                    }
                }
            }
        };
        self.config = new.clone();
        Ok(change)
    }
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
