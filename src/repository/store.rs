//! The *repository* is a Triton-layout directory on disk and the current
//! snapshot of what is loaded from it. Edits build a new snapshot under one
//! lock and publish it with one atomic swap.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use super::error::NameError;
use super::snapshot::{Snapshot, VersionEntry, VersionState};

/// How long [`Repository::settled`] waits for another caller's load.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// The repository on disk and the current snapshot of it.
pub struct Repository {
    root: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Serialises snapshot edits (never held across a model load).
    edit: Mutex<()>,
    /// Signalled after every publish (with `edit`), for [`settled`](Self::settled).
    published: Condvar,
    /// Versions loaded on request (admin load, validation): repository
    /// polling keeps them until they are unloaded explicitly.
    held: Mutex<BTreeSet<(String, u64)>>,
}

impl Repository {
    /// A repository rooted at `root`; nothing is loaded yet.
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository {
            root: root.into(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            edit: Mutex::new(()),
            published: Condvar::new(),
            held: Mutex::new(BTreeSet::new()),
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
        self.published.notify_all();
    }

    /// Like [`publish`](Self::publish), but publishes nothing when `f` fails.
    pub fn try_publish<T, E>(&self, f: impl FnOnce(&mut Snapshot) -> Result<T, E>) -> Result<T, E> {
        let _guard = self.edit.lock();
        let mut next = Snapshot::clone(&self.current.load());
        let out = f(&mut next)?;
        self.current.store(Arc::new(next));
        self.published.notify_all();
        Ok(out)
    }

    /// `version`'s state once no load of it is running: a load started by
    /// another caller (the fleet's preload, an admin load) is waited for,
    /// since LOADING would read as a failed load. Blocking; waits at most
    /// `SETTLE_LIMIT`, then answers what it sees.
    pub(super) fn settled(&self, model: &str, version: u64) -> VersionState {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut guard = self.edit.lock();
        loop {
            let state = self
                .current
                .load()
                .models
                .get(model)
                .and_then(|m| m.versions.get(&version))
                .map(|v| v.state.clone())
                .unwrap_or(VersionState::Unavailable("removed while loading".into()));
            if !matches!(state, VersionState::Loading) || Instant::now() >= deadline {
                return state;
            }
            self.published.wait_until(&mut guard, deadline);
        }
    }

    /// Marks a version as loaded on request: polling keeps it.
    pub(super) fn hold(&self, model: &str, version: u64) {
        self.held.lock().insert((model.to_string(), version));
    }

    /// Forgets the hold on a version (it was unloaded explicitly).
    pub(super) fn release(&self, model: &str, version: u64) {
        self.held.lock().remove(&(model.to_string(), version));
    }

    /// True when an admin load or a validation holds the version.
    pub fn is_held(&self, model: &str, version: u64) -> bool {
        self.held.lock().contains(&(model.to_string(), version))
    }

    /// Sets one version's state (and runtime) in a new snapshot.
    pub(super) fn set_version(&self, model: &str, entry: VersionEntry) {
        self.publish(|s| {
            if let Some(m) = s.models.get_mut(model) {
                Arc::make_mut(m).versions.insert(entry.number, entry);
            }
        });
    }

    /// Model directory names in the repository, sorted. A symbolic link to a
    /// directory counts when it stays inside the repository (see
    /// [`model_dir`](Self::model_dir)); links that leave it, and directories
    /// whose names are not valid model names (see [`check_model_name`]), are
    /// skipped with a warning.
    pub fn model_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `is_dir` follows links: a link to a directory may be a model
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            // ... when it resolves inside the repository; one that leaves it
            // is never served
            match self.model_dir(&name) {
                Ok(_) => names.push(name),
                Err(e) => tracing::warn!(error = %e, "skipping a directory of the model repository"),
            }
        }
        names.sort();
        Ok(names)
    }

    /// The directory of `model`: the name must be a valid model name and the
    /// directory, once symbolic links are resolved, must lie inside the
    /// repository. Errors never name a path, so they reveal nothing about
    /// the file system outside the repository.
    pub fn model_dir(&self, model: &str) -> Result<PathBuf, NameError> {
        check_model_name(model)?;
        let dir = self.root.join(model);
        let (Ok(resolved), Ok(root)) = (dir.canonicalize(), self.root.canonicalize()) else {
            return Err(NameError::NoDirectory(model.to_string()));
        };
        if !resolved.starts_with(&root) || !resolved.is_dir() {
            return Err(NameError::Outside(model.to_string()));
        }
        Ok(dir)
    }

    /// The directory of `version` of `model`, confined like [`model_dir`](Self::model_dir).
    pub fn version_dir(&self, model: &str, version: u64) -> Result<PathBuf, NameError> {
        let dir = self.model_dir(model)?.join(version.to_string());
        let (Ok(resolved), Ok(root)) = (dir.canonicalize(), self.root.canonicalize()) else {
            return Err(NameError::NoVersionDirectory(model.to_string(), version));
        };
        if !resolved.starts_with(&root) {
            return Err(NameError::Outside(model.to_string()));
        }
        Ok(dir)
    }

    /// Complete version directories of `model` (a positive integer name
    /// without leading zero, holding `model.onnx`), ascending; none for a
    /// name that is not a model directory inside the repository.
    pub fn versions_on_disk(&self, model: &str) -> Vec<u64> {
        let Ok(dir) = self
            .model_dir(model)
            .and_then(|d| std::fs::read_dir(d).map_err(|_| NameError::NoDirectory(model.to_string())))
        else {
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

/// Longest model name accepted, in bytes.
pub const MAX_MODEL_NAME: usize = 255;

/// Checks a model name taken from a request or the disk: 1 to 255 bytes of
/// `[A-Za-z0-9_.-]`, not starting with a dot and without `..`, so it is
/// always one directory directly under the repository.
pub fn check_model_name(name: &str) -> Result<(), NameError> {
    let valid_bytes = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty()
        || name.len() > MAX_MODEL_NAME
        || !valid_bytes
        || name.starts_with('.')
        || name.contains("..")
    {
        let shown: String = name.chars().take(64).collect();
        return Err(NameError::Invalid(shown));
    }
    Ok(())
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
    fn model_names_are_one_plain_directory() {
        for good in ["digits", "mlp_wide", "a-b.c", "v2", "A_1"] {
            assert!(check_model_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a..b",
            "/tmp/evil",
            "../x",
            "a/b",
            "a\\b",
            "x y",
            "é",
            "a\0b",
        ] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_model_name(&"m".repeat(256)).is_err());
    }

    #[test]
    fn directories_are_confined_to_the_repository() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("1")).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("inside/1")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let repo = Repository::new(root.path());
        assert!(repo.model_dir("inside").is_ok());
        assert!(repo.version_dir("inside", 1).is_ok());
        let escaped = repo.model_dir("escape").unwrap_err();
        assert!(matches!(escaped, NameError::Outside(_)), "{escaped:?}");
        let missing = repo.model_dir("nope").unwrap_err().to_string();
        assert!(!missing.contains(&root.path().display().to_string()), "{missing}");
        let absolute = outside.path().display().to_string();
        assert!(matches!(repo.model_dir(&absolute), Err(NameError::Invalid(_))));
    }

    #[test]
    fn version_dir_names() {
        assert_eq!(parse_version_dir("1"), Some(1));
        assert_eq!(parse_version_dir("42"), Some(42));
        for bad in ["0", "01", "", "1a", "-1", "v1", ".1"] {
            assert_eq!(parse_version_dir(bad), None, "{bad}");
        }
    }
}
