//! Sets `CORRAL_COMMIT` for `corral --version`: the git commit (12 hex digits, `-dirty` when
//! tracked files differ from it), else `CORRAL_BUILD_COMMIT` (builds from a source archive),
//! else `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CORRAL_BUILD_COMMIT");
    let commit = git_commit()
        .or_else(|| {
            let c = std::env::var("CORRAL_BUILD_COMMIT").ok()?;
            let c = c.trim();
            let printable = !c.is_empty() && c.chars().all(|ch| ch.is_ascii_graphic());
            printable.then(|| c.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CORRAL_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    // Never take a lock or refresh the index: this runs next to whatever else uses the tree.
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn git_commit() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // Only this package's own repository: a source archive unpacked inside another
    // repository must not report that one's commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest_dir.canonicalize().ok()? {
        return None;
    }
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    watch_head();
    // Checked when HEAD moves only, so edits after the last commit or checkout may go
    // unnoticed until then; re-running on every edit would rebuild the binary each time.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Re-runs this script when HEAD or the branch it points to moves, and for nothing else.
fn watch_head() {
    let watch = |p: &Path| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watch(Path::new(&head));
    }
    let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) else {
        // A detached HEAD holds the commit itself.
        return;
    };
    let Some(loose) = git(&["rev-parse", "--git-path", &branch]) else {
        return;
    };
    let loose = PathBuf::from(loose);
    if loose.exists() {
        watch(&loose);
        return;
    }
    // A packed ref: a new commit writes the loose file into its directory.
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watch(Path::new(&packed));
    }
    if let Some(dir) = loose.parent() {
        watch(dir);
    }
}
