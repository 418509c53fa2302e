//! The disk budget (`limits.disk.bytes`): how many bytes a task added to the files under its
//! writable grants. wasmtime-wasi writes granted files directly, with no hook per write,
//! so the host measures instead: the total size of the regular files under each writable
//! granted directory (recursively, symlinks not followed, at most [`MAX_ENTRIES`] entries),
//! against the total when the instance was created. It is measured at most every
//! [`MEASURE_EVERY`] while the guest runs (at an epoch tick) and after each call, so a task
//! can go over by what it writes in that time before it fails. Bytes written and then
//! truncated away, and files replaced by smaller ones, are not counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Grants;

/// Longest time between two measurements while a guest runs or calls come in.
const MEASURE_EVERY: Duration = Duration::from_millis(50);
/// Entries looked at per measurement; beyond, the rest of the tree is not counted.
const MAX_ENTRIES: usize = 10_000;

/// Measures one task's writable grants.
pub struct DiskMeter {
    dirs: Vec<PathBuf>,
    budget: u64,
    baseline: u64,
    measured: Instant,
}

impl DiskMeter {
    /// A meter for the writable directories of `grants`; None when `budget` is 0
    /// (unlimited) or nothing is writable.
    pub fn new(grants: &Grants, budget: u64) -> Option<DiskMeter> {
        let dirs: Vec<PathBuf> = grants
            .dirs
            .iter()
            .filter(|grant| grant.writable)
            .map(|grant| grant.dir.clone())
            .collect();
        if budget == 0 || dirs.is_empty() {
            return None;
        }
        let baseline = total_size(&dirs);
        Some(DiskMeter {
            dirs,
            budget,
            baseline,
            measured: Instant::now(),
        })
    }

    /// The bytes added so far when they exceed the budget; measures only when the last
    /// measurement is older than [`MEASURE_EVERY`], unless `now`.
    pub fn over_budget(&mut self, now: bool) -> Option<u64> {
        if !now && self.measured.elapsed() < MEASURE_EVERY {
            return None;
        }
        self.measured = Instant::now();
        let added = total_size(&self.dirs).saturating_sub(self.baseline);
        (added > self.budget).then_some(added)
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }
}

/// Bytes of the regular files under `dirs`.
fn total_size(dirs: &[PathBuf]) -> u64 {
    let mut entries = 0usize;
    dirs.iter().map(|dir| size_under(dir, &mut entries)).sum()
}

fn size_under(dir: &Path, entries: &mut usize) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in listing.flatten() {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            break;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            total += meta.len();
        } else if meta.is_dir() {
            total += size_under(&entry.path(), entries);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::DirGrant;

    #[test]
    fn bytes_added_under_writable_grants_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), vec![0u8; 100]).unwrap();
        let grants = Grants {
            dirs: vec![DirGrant {
                dir: dir.path().to_path_buf(),
                writable: true,
            }],
            network: Vec::new(),
        };
        assert!(DiskMeter::new(&grants, 0).is_none(), "0 is unlimited");
        let mut meter = DiskMeter::new(&grants, 1000).unwrap();
        assert_eq!(meter.over_budget(true), None);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/new"), vec![0u8; 1001]).unwrap();
        assert_eq!(meter.over_budget(true), Some(1001));
    }
}
