//! Reads every host metric from a proc root: `/proc` in production, recorded files in tests.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use corral_model::Datapoint;

use super::cpu::{self, CpuTimes};
use super::error::{ParseError, ReadError};
use super::fs::{self, Mount, StatFs};
use super::{load, memory, net, process, uptime};

/// One source of host metrics; the `reader` tag of `corral.host.read_errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reader {
    Uptime,
    Cpu,
    CpuInfo,
    Load,
    Memory,
    Filesystem,
    /// The `statvfs` of one mount (the others are still reported).
    Statvfs,
    Network,
    Process,
}

impl Reader {
    pub const ALL: [Reader; 9] = [
        Reader::Uptime,
        Reader::Cpu,
        Reader::CpuInfo,
        Reader::Load,
        Reader::Memory,
        Reader::Filesystem,
        Reader::Statvfs,
        Reader::Network,
        Reader::Process,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reader::Uptime => "uptime",
            Reader::Cpu => "cpu",
            Reader::CpuInfo => "cpuinfo",
            Reader::Load => "load",
            Reader::Memory => "memory",
            Reader::Filesystem => "filesystem",
            Reader::Statvfs => "statvfs",
            Reader::Network => "network",
            Reader::Process => "process",
        }
    }
}

pub type ReaderResult = Result<Vec<Datapoint>, ReadError>;

/// What the `/proc` readers produced; the mounts still need their `statvfs`.
#[derive(Debug)]
pub struct ProcReading {
    pub results: Vec<(Reader, ReaderResult)>,
    pub mounts: Result<Vec<Mount>, ReadError>,
}

/// A complete reading: one result per reader (`Filesystem` included), and the mounts whose
/// `statvfs` worked or failed.
#[derive(Debug, Default)]
pub struct Reading {
    pub results: Vec<(Reader, ReaderResult)>,
    pub statvfs_ok: Vec<PathBuf>,
    pub statvfs_failed: Vec<(PathBuf, io::Error)>,
}

impl Reading {
    /// The datapoints of every reader that worked.
    pub fn points(&self) -> impl Iterator<Item = &Datapoint> {
        self.results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
    }

    pub fn error(&self, reader: Reader) -> Option<&ReadError> {
        self.results
            .iter()
            .find(|(r, _)| *r == reader)
            .and_then(|(_, res)| res.as_ref().err())
    }
}

pub struct HostReader {
    root: PathBuf,
    statfs: StatFs,
    prev_cpu: Option<CpuTimes>,
}

impl HostReader {
    /// Reads under `proc_root`, taking `statvfs` with `statfs`. Takes the first `/proc/stat`
    /// sample now, so that the first read already has CPU percentages.
    pub fn new(proc_root: &Path, statfs: StatFs) -> Self {
        let mut r = HostReader {
            root: proc_root.to_path_buf(),
            statfs,
            prev_cpu: None,
        };
        r.prev_cpu = r.file("stat", cpu::parse_stat).ok();
        r
    }

    /// `/proc` and the real `statvfs`.
    pub fn system() -> Self {
        Self::new(Path::new("/proc"), fs::system_statfs())
    }

    pub fn statfs(&self) -> StatFs {
        self.statfs.clone()
    }

    /// Every reader but the `statvfs` of the mounts, which may block (a dead disk) and so is
    /// left to the caller.
    pub fn read_proc(&mut self) -> ProcReading {
        let cpu = self
            .file("stat", cpu::parse_stat)
            .map(|cur| self.cpu_points(cur));
        let results = vec![
            (Reader::Uptime, self.file("uptime", uptime::points)),
            (Reader::Cpu, cpu),
            (
                Reader::CpuInfo,
                self.file("cpuinfo", cpu::cores).map(cpu::cores_points),
            ),
            (Reader::Load, self.file("loadavg", load::points)),
            (Reader::Memory, self.file("meminfo", memory::points)),
            (Reader::Network, self.file("net/dev", net::points)),
            (Reader::Process, self.processes().map(process::points)),
        ];
        ProcReading {
            results,
            mounts: self.mounts(),
        }
    }

    /// Every reader, `statvfs` included, on this thread.
    pub fn read(&mut self) -> Reading {
        let proc = self.read_proc();
        let mut reading = Reading {
            results: proc.results,
            ..Reading::default()
        };
        let fs = proc.mounts.map(|mounts| {
            let r = fs::stat_mounts(&mounts, &self.statfs);
            reading.statvfs_ok = r.ok;
            reading.statvfs_failed = r.failed;
            r.points
        });
        reading.results.push((Reader::Filesystem, fs));
        reading
    }

    fn cpu_points(&mut self, cur: CpuTimes) -> Vec<Datapoint> {
        let Some(prev) = self.prev_cpu else {
            self.prev_cpu = Some(cur);
            return Vec::new();
        };
        match cpu::usage(&prev, &cur) {
            Some(u) => {
                self.prev_cpu = Some(cur);
                cpu::usage_points(&u)
            }
            None => {
                // No tick elapsed: keep the earlier sample, unless the counters went back.
                if cur.total() < prev.total() {
                    self.prev_cpu = Some(cur);
                }
                Vec::new()
            }
        }
    }

    fn mounts(&self) -> Result<Vec<Mount>, ReadError> {
        let types = self.file("filesystems", |b| {
            fs::device_types(&String::from_utf8_lossy(b))
        })?;
        self.file("self/mountinfo", |b| {
            fs::select_mounts(&String::from_utf8_lossy(b), &types)
        })
    }

    fn processes(&self) -> Result<usize, ReadError> {
        let dir = std::fs::read_dir(&self.root).map_err(|source| ReadError::Io {
            path: self.root.clone(),
            source,
        })?;
        // An entry that vanishes while listing is a process that exited.
        Ok(process::count(
            dir.filter_map(|e| e.ok()).map(|e| e.file_name()),
        ))
    }

    fn file<T>(
        &self,
        rel: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T, ReadError> {
        let path = self.root.join(rel);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(source) => return Err(ReadError::Io { path, source }),
        };
        // procfs' parsers index and assert on some malformed input; a panic there must cost
        // only this reader.
        match catch_unwind(AssertUnwindSafe(|| parse(&bytes))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ReadError::Parse { path, source }),
            Err(_) => Err(ReadError::Parse {
                path,
                source: ParseError("the parser panicked".into()),
            }),
        }
    }
}
