//! Without brokers, batches are written to rotating Avro container files under
//! `data_dir/avro/`.
//!
//! The file being written is `corral-<unix ms>-<n>.avro.tmp`: its header is written when it is
//! opened and each submit appends whole blocks in one write, so at any time the file is a valid
//! container file up to its last complete block (readers such as `corral avro-dump` or fastavro
//! can read it while it grows, barring a block caught mid-write). A file is closed by renaming it
//! to `.avro` when it reaches its size or age limit, and on shutdown. A `.avro.tmp` left by a
//! crash is cut back to its last complete block and renamed at the next start. The oldest
//! closed files are deleted to keep the directory within its byte and file-count bounds.
//!
//! [`AvroFileSink::reconfigure`] applies a new codec (the open file is closed; the next one is
//! written with the new codec) and new bounds (enforced at once).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use corral_model::MetricBatch;
use parking_lot::Mutex;

use super::avro::{self, Chunk, Encoder, Routing};
use crate::config::AvroCodec;
use crate::outputs::Sink;
use crate::telemetry::{Counter, Gauge, Telemetry};

#[derive(Clone, Debug, PartialEq)]
pub struct FileOptions {
    pub dir: PathBuf,
    pub codec: AvroCodec,
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    /// Bound of all files together, the open one included.
    pub max_total_bytes: u64,
    pub max_files: usize,
}

impl FileOptions {
    pub fn new(dir: PathBuf, codec: AvroCodec, max_total_bytes: u64) -> Self {
        FileOptions {
            dir,
            codec,
            max_file_bytes: (max_total_bytes / 4).clamp(64 << 10, 64 << 20),
            max_file_age: Duration::from_secs(3600),
            max_total_bytes,
            max_files: 1000,
        }
    }
}

enum Event {
    Batches(Vec<Arc<MetricBatch>>),
    Reconfigure(FileOptions),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

pub struct AvroFileSink {
    tx: Mutex<Sender<Event>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Metrics {
    bytes_written: Arc<Counter>,
    files: Arc<Gauge>,
    deleted: Arc<Counter>,
    errors: Arc<Counter>,
}

struct Current {
    path: PathBuf,
    file: File,
    marker: [u8; 16],
    bytes: u64,
    opened: Instant,
}

struct Worker {
    opts: FileOptions,
    encoder: Encoder,
    /// Closed files, oldest first, with their sizes.
    closed: Vec<(PathBuf, u64)>,
    current: Option<Current>,
    metrics: Metrics,
    seq: u64,
}

/// Cuts a file left open by a crash back to its last complete block; `false` when it holds
/// no complete block.
fn recover_tmp(path: &Path) -> std::io::Result<bool> {
    let data = fs::read(path)?;
    match avro::ocf_extent(&data) {
        Some(ext) if ext.blocks > 0 => {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(ext.complete as u64)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

impl AvroFileSink {
    pub fn start(opts: FileOptions, telemetry: &Arc<Telemetry>) -> Result<Arc<AvroFileSink>> {
        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
        let metrics = Metrics {
            bytes_written: telemetry.counter("corral.avro_files.bytes_written", &[]),
            files: telemetry.gauge("corral.avro_files.files", &[]),
            deleted: telemetry.counter("corral.avro_files.files_deleted", &[]),
            errors: telemetry.counter("corral.avro_files.write_errors", &[]),
        };
        let mut closed = Vec::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(&opts.dir)
            .with_context(|| format!("cannot read {}", opts.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(stem) = name.strip_suffix(".avro.tmp") {
                let done = path.with_file_name(format!("{stem}.avro"));
                match recover_tmp(&path) {
                    Ok(true) => {
                        if fs::rename(&path, &done).is_ok() {
                            tracing::warn!(file = %done.display(), "closed an Avro file left open by an earlier run");
                            closed.push(done);
                        }
                    }
                    Ok(false) => {
                        let _ = fs::remove_file(&path);
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot recover an Avro file");
                        metrics.errors.inc();
                    }
                }
            } else if name.ends_with(".avro") {
                closed.push(path);
            }
        }
        closed.sort();
        let closed = closed
            .into_iter()
            .map(|p| {
                let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut worker = Worker {
            encoder: Encoder::new(Routing::default(), avro::DEFAULT_MAX_MESSAGE_BYTES),
            opts,
            closed,
            current: None,
            metrics,
            seq: 0,
        };
        worker.enforce_bounds();
        let handle = std::thread::Builder::new()
            .name("corral-avro-files".into())
            .spawn(move || {
                crate::priority::background();
                worker.run(rx)
            })
            .context("cannot start the Avro file sink thread")?;
        Ok(Arc::new(AvroFileSink {
            tx: Mutex::new(tx),
            worker: Mutex::new(Some(handle)),
        }))
    }
}

impl AvroFileSink {
    /// Applies new settings to what is handed over from now on. The directory stays the one
    /// the sink started with.
    pub fn reconfigure(&self, opts: FileOptions) {
        let _ = self.tx.lock().send(Event::Reconfigure(opts));
    }
}

impl Sink for AvroFileSink {
    fn name(&self) -> &'static str {
        "avro_files"
    }

    fn submit(&self, batches: &[Arc<MetricBatch>]) {
        let _ = self.tx.lock().send(Event::Batches(batches.to_vec()));
    }

    fn shutdown(&self, _deadline: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.lock().send(Event::Shutdown(done_tx));
        Box::pin(async move {
            let _ = done_rx.await;
            let handle = self.worker.lock().take();
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        })
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<Event>) {
        loop {
            let wait = self
                .current
                .as_ref()
                .map_or(Duration::from_secs(3600), |c| {
                    self.opts.max_file_age.saturating_sub(c.opened.elapsed())
                });
            match rx.recv_timeout(wait) {
                Ok(Event::Batches(b)) => self.write(&b),
                Ok(Event::Reconfigure(opts)) => self.reconfigure(opts),
                Ok(Event::Shutdown(done)) => {
                    self.close();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    return;
                }
            }
            if self
                .current
                .as_ref()
                .is_some_and(|c| c.opened.elapsed() >= self.opts.max_file_age)
            {
                self.close();
            }
        }
    }

    fn reconfigure(&mut self, mut opts: FileOptions) {
        opts.dir.clone_from(&self.opts.dir);
        if opts == self.opts {
            return;
        }
        tracing::info!(
            codec = avro::codec_name(opts.codec),
            max_total_bytes = opts.max_total_bytes,
            "Avro file settings changed"
        );
        // A container file has one codec, named in its header.
        if opts.codec != self.opts.codec {
            self.close();
        }
        self.opts = opts;
        self.close_if_full();
        self.enforce_bounds();
    }

    /// Closes the open file once it has reached `max_file_bytes`.
    fn close_if_full(&mut self) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.bytes >= self.opts.max_file_bytes)
        {
            self.close();
        }
    }

    fn open(&mut self) -> std::io::Result<&mut Current> {
        if self.current.is_none() {
            let ms = corral_model::unix_millis(SystemTime::now());
            self.seq += 1;
            let path = self
                .opts
                .dir
                .join(format!("corral-{ms:013}-{:04}.avro.tmp", self.seq % 10_000));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let marker = avro::random_marker();
            let header = avro::ocf_header(self.opts.codec, &marker);
            file.write_all(&header)?;
            self.metrics.bytes_written.add(header.len() as u64);
            self.current = Some(Current {
                path,
                file,
                marker,
                bytes: header.len() as u64,
                opened: Instant::now(),
            });
            self.metrics.files.set((self.closed.len() + 1) as f64);
        }
        // Just ensured above.
        self.current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open file"))
    }

    fn write(&mut self, batches: &[Arc<MetricBatch>]) {
        // Chunk by chunk (each a complete block): a flush of many series is never held
        // encoded in memory as a whole.
        let mut failed = None;
        let placeholder = Encoder::new(Routing::default(), avro::DEFAULT_MAX_MESSAGE_BYTES);
        let mut encoder = std::mem::replace(&mut self.encoder, placeholder);
        for b in batches {
            encoder.encode_batch_each(b, |chunk| {
                if failed.is_none() {
                    if let Err(e) = self.append(std::slice::from_ref(&chunk)) {
                        failed = Some(e);
                    }
                }
            });
        }
        self.encoder = encoder;
        if let Some(e) = failed {
            tracing::error!(error = %format!("{e:#}"), dir = %self.opts.dir.display(), "cannot write Avro file; batch lost");
            self.metrics.errors.inc();
            // Start afresh: the file keeps what was written before.
            self.close();
        }
        self.close_if_full();
        self.enforce_bounds();
    }

    fn append(&mut self, chunks: &[Chunk]) -> Result<()> {
        let codec = self.opts.codec;
        let cur = self.open()?;
        let mut buf = Vec::new();
        for c in chunks {
            avro::append_block(&mut buf, codec, &cur.marker, c.records, &c.data)?;
        }
        // One write per submit: a reader never sees a block without its sync marker unless it
        // races this very call.
        cur.file.write_all(&buf)?;
        cur.bytes += buf.len() as u64;
        self.metrics.bytes_written.add(buf.len() as u64);
        Ok(())
    }

    fn close(&mut self) {
        let Some(cur) = self.current.take() else {
            return;
        };
        drop(cur.file);
        let done = cur.path.with_extension("");
        // `x.avro.tmp` without its last extension is `x.avro`.
        match fs::rename(&cur.path, &done) {
            Ok(()) => self.closed.push((done, cur.bytes)),
            Err(e) => {
                tracing::error!(file = %cur.path.display(), error = %e, "cannot close Avro file");
                self.metrics.errors.inc();
            }
        }
        self.metrics.files.set(self.closed.len() as f64);
    }

    fn enforce_bounds(&mut self) {
        let open = self.current.as_ref().map_or(0, |c| c.bytes);
        let mut total: u64 = self.closed.iter().map(|(_, b)| b).sum::<u64>() + open;
        let open_files = usize::from(self.current.is_some());
        while !self.closed.is_empty()
            && (total > self.opts.max_total_bytes
                || self.closed.len() + open_files > self.opts.max_files)
        {
            let (path, bytes) = self.closed.remove(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), bytes, "deleted the oldest Avro file to stay within spool_max_bytes");
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete old Avro file");
                }
            }
            self.metrics.deleted.inc();
            total -= bytes;
        }
        self.metrics
            .files
            .set((self.closed.len() + open_files) as f64);
    }
}
