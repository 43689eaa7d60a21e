//! `filesystem.*` per mount: which mounts count (from `/proc/self/mountinfo` and
//! `/proc/filesystems`) and their `statvfs` figures.
//!
//! - A mount counts when it has a source (not `none`) and its type is backed by a device: listed
//!   in `/proc/filesystems` without `nodev`, or `zfs` (which registers as `nodev`). That is
//!   dcos-metrics' rule; it leaves out proc, sysfs, tmpfs, cgroup, overlay, NFS and the like.
//! - A device mounted more than once (bind mounts, the same filesystem at two places, the
//!   bind-mounted files of a container) is one filesystem: it is reported once, at its shortest
//!   mount point (the first listed on a tie). Mounts are the same device when their `st_dev`
//!   (mountinfo's major:minor) is.
//! - `filesystem.capacity.free` is `f_bavail`: what non-root users can still write, as `df`
//!   shows. `used` is `f_blocks − f_bfree`, so `used + free` falls short of `total` by the
//!   blocks reserved for root.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_model::{Datapoint, Unit};
use procfs_core::process::MountInfo;

use super::error::ParseError;
use super::point::tagged;

/// A filesystem to report, at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// `st_dev` as `major:minor`.
    pub device: String,
}

/// The `statvfs` figures used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub bsize: u64,
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// Takes the `statvfs` of a mount point. Replaceable so tests need no real mounts.
pub type StatFs = Arc<dyn Fn(&Path) -> io::Result<FsStats> + Send + Sync>;

/// The real `statvfs(2)`.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let s = rustix::fs::statvfs(path)?;
    Ok(FsStats {
        bsize: s.f_bsize,
        frsize: s.f_frsize,
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
    })
}

pub fn system_statfs() -> StatFs {
    Arc::new(statvfs)
}

/// The device-backed filesystem types of `/proc/filesystems`, plus `zfs`.
pub fn device_types(text: &str) -> Result<HashSet<String>, ParseError> {
    let mut types = HashSet::new();
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(flag), Some(name)) = (cols.next(), cols.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError(format!("unexpected line {line:?}")));
        };
        let name = name.trim();
        if flag.trim().is_empty() && !name.is_empty() {
            types.insert(name.to_string());
        }
    }
    if types.is_empty() {
        return Err(ParseError("no device-backed filesystem types".into()));
    }
    types.insert("zfs".to_string());
    Ok(types)
}

/// The mounts to report, one per device, from the text of `/proc/self/mountinfo`.
pub fn select_mounts(mountinfo: &str, types: &HashSet<String>) -> Result<Vec<Mount>, ParseError> {
    let mut parsed = 0usize;
    let mut by_device: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Mount> = Vec::new();
    for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
        // A line this parser does not understand (a future kernel's format) drops only that
        // mount.
        let Ok(m) = MountInfo::from_line(line) else {
            continue;
        };
        parsed += 1;
        let Some(source) = m.mount_source else {
            continue;
        };
        if !types.contains(&m.fs_type) {
            continue;
        }
        let path = unescape(&m.mount_point.to_string_lossy());
        let mount = Mount {
            path,
            fs_type: m.fs_type,
            source,
            device: m.majmin,
        };
        match by_device.get(&mount.device) {
            Some(&i) => {
                if mount.path.as_os_str().len() < out[i].path.as_os_str().len() {
                    out[i] = mount;
                }
            }
            None => {
                by_device.insert(mount.device.clone(), out.len());
                out.push(mount);
            }
        }
    }
    if parsed == 0 {
        return Err(ParseError("no mount entries".into()));
    }
    Ok(out)
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash in mount paths.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(&[x, y, z]) = b.get(i + 1..i + 4) {
                let octal = |c: u8| c.is_ascii_digit() && c < b'8';
                if octal(x) && octal(y) && octal(z) {
                    let v =
                        u32::from(x - b'0') * 64 + u32::from(y - b'0') * 8 + u32::from(z - b'0');
                    if let Ok(byte) = u8::try_from(v) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn points(path: &str, s: &FsStats) -> Vec<Datapoint> {
    let frsize = if s.frsize == 0 { s.bsize } else { s.frsize };
    let bytes = |blocks: u64| blocks.saturating_mul(frsize) as f64;
    let tag = ("path", path);
    vec![
        tagged(
            "filesystem.capacity.total",
            tag,
            Unit::Bytes,
            bytes(s.blocks),
        ),
        tagged(
            "filesystem.capacity.used",
            tag,
            Unit::Bytes,
            bytes(s.blocks.saturating_sub(s.bfree)),
        ),
        tagged(
            "filesystem.capacity.free",
            tag,
            Unit::Bytes,
            bytes(s.bavail),
        ),
        tagged("filesystem.inode.total", tag, Unit::Count, s.files as f64),
        tagged(
            "filesystem.inode.used",
            tag,
            Unit::Count,
            s.files.saturating_sub(s.ffree) as f64,
        ),
        tagged("filesystem.inode.free", tag, Unit::Count, s.ffree as f64),
    ]
}

/// The datapoints of the mounts whose `statvfs` worked, and which worked or failed.
#[derive(Debug, Default)]
pub struct FsReading {
    pub points: Vec<Datapoint>,
    pub ok: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, io::Error)>,
}

pub fn stat_mounts(mounts: &[Mount], statfs: &StatFs) -> FsReading {
    let mut r = FsReading::default();
    for m in mounts {
        match statfs(&m.path) {
            Ok(s) => {
                r.points.extend(points(&m.path.to_string_lossy(), &s));
                r.ok.push(m.path.clone());
            }
            Err(e) => r.failed.push((m.path.clone(), e)),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/mnt/my\040disk"), Path::new("/mnt/my disk"));
        assert_eq!(unescape(r"/a\134b\011c"), Path::new("/a\\b\tc"));
        assert_eq!(unescape(r"/a\9\04"), Path::new(r"/a\9\04"));
    }

    #[test]
    fn device_types_are_the_non_nodev_ones_plus_zfs() {
        let t = device_types("nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\nnodev\tzfs\n").unwrap();
        let mut v: Vec<_> = t.into_iter().collect();
        v.sort();
        assert_eq!(v, ["ext4", "vfat", "zfs"]);
        assert!(device_types("nodev\tproc\n").is_err());
        assert!(device_types("garbage\n").is_err());
    }

    #[test]
    fn used_and_free_follow_df() {
        let s = FsStats {
            bsize: 4096,
            frsize: 4096,
            blocks: 1000,
            bfree: 300,
            bavail: 250,
            files: 64,
            ffree: 60,
        };
        let v: Vec<(String, f64)> = points("/", &s)
            .into_iter()
            .map(|p| (p.name(), p.value))
            .collect();
        assert_eq!(
            v,
            [
                ("filesystem.capacity.total".to_string(), 4_096_000.0),
                ("filesystem.capacity.used".to_string(), 2_867_200.0),
                ("filesystem.capacity.free".to_string(), 1_024_000.0),
                ("filesystem.inode.total".to_string(), 64.0),
                ("filesystem.inode.used".to_string(), 4.0),
                ("filesystem.inode.free".to_string(), 60.0),
            ]
        );
    }
}
