//! The memory of recent request ids: which version answered each, so that
//! feedback naming a request id is attributed to the version that served
//! it, and taken once per answer. Bounded in entries and in bytes (oldest
//! forgotten first); ids are at most `limits::MAX_CLIENT_STRING` bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// Request ids remembered at most.
pub const REMEMBERED: usize = 100_000;
/// Bytes the remembered ids may take at most (ids plus bookkeeping).
pub const REMEMBERED_BYTES: usize = 16 << 20;
/// Bookkeeping bytes per id besides the id itself: the map and queue slots,
/// the shared string's header, the entry.
const ENTRY_OVERHEAD: usize = 96;

/// What one answered request left behind.
struct Entry {
    model: Arc<str>,
    version: u64,
    /// Feedback for this answer was taken (it is accepted once).
    feedback_taken: bool,
}

/// Request id → entry, plus insertion order for eviction. Ids are allocated
/// once (shared by the map and the queue) and model names once per model:
/// this runs on every predict request.
#[derive(Default)]
struct Remembered {
    by_id: HashMap<Arc<str>, Entry>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
    models: Vec<Arc<str>>,
}

/// Whether feedback may be recorded for a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Yes: the version that answered it (the claim is now used up).
    Granted(u64),
    /// This server did not answer that id recently.
    Unknown,
    /// The id was answered by another model (named).
    OtherModel(String),
    /// Feedback for this answer was already taken.
    AlreadyTaken,
}

/// A bounded map of recent request ids to the version that answered.
#[derive(Default)]
pub struct RecentRequests {
    inner: Mutex<Remembered>,
}

impl RecentRequests {
    /// Remembers that `version` of `model` answered request `id`. An id
    /// answered again is a new answer: it may take feedback again.
    pub fn remember(&self, id: &str, model: &str, version: u64) {
        let mut guard = self.inner.lock();
        let r = &mut *guard;
        if let Some(entry) = r.by_id.get_mut(id) {
            if &*entry.model != model {
                entry.model = intern(&mut r.models, model);
            }
            entry.version = version;
            entry.feedback_taken = false;
            return;
        }
        let model = intern(&mut r.models, model);
        let id: Arc<str> = Arc::from(id);
        r.bytes += id.len() + ENTRY_OVERHEAD;
        r.by_id.insert(
            id.clone(),
            Entry {
                model,
                version,
                feedback_taken: false,
            },
        );
        r.order.push_back(id);
        while r.order.len() > REMEMBERED || r.bytes > REMEMBERED_BYTES {
            let Some(old) = r.order.pop_front() else { break };
            r.bytes -= old.len() + ENTRY_OVERHEAD;
            r.by_id.remove(&old);
        }
    }

    /// The (model, version) that answered `id`.
    pub fn get(&self, id: &str) -> Option<(String, u64)> {
        self.inner
            .lock()
            .by_id
            .get(id)
            .map(|e| (e.model.to_string(), e.version))
    }

    /// Claims the one feedback value the answer to `id` by `model` may get.
    pub fn claim_feedback(&self, id: &str, model: &str) -> Claim {
        let mut guard = self.inner.lock();
        match guard.by_id.get_mut(id) {
            None => Claim::Unknown,
            Some(e) if &*e.model != model => Claim::OtherModel(e.model.to_string()),
            Some(e) if e.feedback_taken => Claim::AlreadyTaken,
            Some(e) => {
                e.feedback_taken = true;
                Claim::Granted(e.version)
            }
        }
    }

    /// (ids, bytes) held now.
    pub fn size(&self) -> (usize, usize) {
        let r = self.inner.lock();
        (r.by_id.len(), r.bytes)
    }
}

/// The shared copy of a model name (models are few; unloaded names stay,
/// which is bounded by the names the repository ever had).
fn intern(models: &mut Vec<Arc<str>>, model: &str) -> Arc<str> {
    match models.iter().find(|m| &***m == model) {
        Some(m) => m.clone(),
        None => {
            let m: Arc<str> = Arc::from(model);
            models.push(m.clone());
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_answer_and_forgets_the_oldest_ids_first() {
        let recent = RecentRequests::default();
        recent.remember("a", "digits", 1);
        recent.remember("b", "mlp_wide", 1);
        recent.remember("a", "digits", 2); // the same id answered again
        assert_eq!(recent.get("a"), Some(("digits".to_string(), 2)));
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 1)));
        assert_eq!(recent.get("c"), None);
        for i in 0..REMEMBERED - 1 {
            recent.remember(&format!("id-{i}"), "digits", 1);
        }
        // "a" is the oldest of REMEMBERED + 1 ids: evicted; "b" is still held
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 1)));
        assert_eq!(
            recent.get(&format!("id-{}", REMEMBERED - 2)),
            Some(("digits".to_string(), 1))
        );
        let inner = recent.inner.lock();
        assert_eq!(inner.by_id.len(), REMEMBERED);
        assert_eq!(inner.order.len(), REMEMBERED);
        assert_eq!(inner.models.len(), 2);
    }

    #[test]
    fn long_ids_are_bounded_in_bytes() {
        let recent = RecentRequests::default();
        let long = "x".repeat(240);
        for i in 0..REMEMBERED {
            recent.remember(&format!("{long}{i:08}"), "digits", 1);
        }
        let (ids, bytes) = recent.size();
        assert!(bytes <= REMEMBERED_BYTES, "{bytes} bytes");
        assert!(ids < REMEMBERED, "the byte bound binds first: {ids} ids");
        assert_eq!(ids, REMEMBERED_BYTES / (248 + ENTRY_OVERHEAD));
    }

    #[test]
    fn feedback_is_claimed_once_per_answer() {
        let recent = RecentRequests::default();
        recent.remember("r1", "digits", 2);
        assert_eq!(
            recent.claim_feedback("r1", "mlp_wide"),
            Claim::OtherModel("digits".into())
        );
        assert_eq!(recent.claim_feedback("r1", "digits"), Claim::Granted(2));
        assert_eq!(recent.claim_feedback("r1", "digits"), Claim::AlreadyTaken);
        assert_eq!(recent.claim_feedback("r2", "digits"), Claim::Unknown);
        recent.remember("r1", "digits", 1); // answered again: a new answer
        assert_eq!(recent.claim_feedback("r1", "digits"), Claim::Granted(1));
    }
}
