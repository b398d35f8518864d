//! The *repository* is a Triton-layout directory on disk and the current
//! snapshot of what is loaded from it. Edits build a new snapshot under one
//! lock and publish it with one atomic swap.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::snapshot::{Snapshot, VersionEntry};

/// The repository on disk and the current snapshot of it.
pub struct Repository {
    root: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Serialises snapshot edits (never held across a model load).
    edit: Mutex<()>,
}

impl Repository {
    /// A repository rooted at `root`; nothing is loaded yet.
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository {
            root: root.into(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            edit: Mutex::new(()),
        }
    }

    /// The directory this repository reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies `f` to a copy of the current snapshot and publishes it.
    pub fn publish(&self, f: impl FnOnce(&mut Snapshot)) {
        let _guard = self.edit.lock();
        let mut next = Snapshot::clone(&self.current.load());
        f(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Like [`publish`](Self::publish), but publishes nothing when `f` fails.
    pub fn try_publish<T, E>(&self, f: impl FnOnce(&mut Snapshot) -> Result<T, E>) -> Result<T, E> {
        let _guard = self.edit.lock();
        let mut next = Snapshot::clone(&self.current.load());
        let out = f(&mut next)?;
        self.current.store(Arc::new(next));
        Ok(out)
    }

    /// Sets one version's state (and runtime) in a new snapshot.
    pub(super) fn set_version(&self, model: &str, entry: VersionEntry) {
        self.publish(|s| {
            if let Some(m) = s.models.get_mut(model) {
                Arc::make_mut(m).versions.insert(entry.number, entry);
            }
        });
    }

    /// Model directory names in the repository, sorted.
    pub fn model_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Complete version directories of `model` (a positive integer name
    /// without leading zero, holding `model.onnx`), ascending.
    pub fn versions_on_disk(&self, model: &str) -> Vec<u64> {
        let Ok(dir) = std::fs::read_dir(self.root.join(model)) else {
            return Vec::new();
        };
        let mut versions: Vec<u64> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = parse_version_dir(&name)?;
                e.path().join("model.onnx").is_file().then_some(v)
            })
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Removes local paths from a message meant for clients.
    pub(super) fn scrub(&self, message: &str) -> String {
        let root = self.root.display().to_string();
        let mut out = message.replace(&root, "<repository>");
        if let Ok(abs) = self.root.canonicalize() {
            out = out.replace(&abs.display().to_string(), "<repository>");
        }
        out
    }
}

/// Parses a version directory name: a positive integer without leading zero.
pub fn parse_version_dir(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dir_names() {
        assert_eq!(parse_version_dir("1"), Some(1));
        assert_eq!(parse_version_dir("42"), Some(42));
        for bad in ["0", "01", "", "1a", "-1", "v1", ".1"] {
            assert_eq!(parse_version_dir(bad), None, "{bad}");
        }
    }
}
