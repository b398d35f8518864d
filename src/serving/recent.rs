//! The memory of recent request ids: which version answered each, so that
//! feedback naming a request id is attributed to the version that served it.
//! Bounded in entries (oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// Request ids remembered at most.
const REMEMBERED: usize = 100_000;

/// Request id → (model, version), plus insertion order for eviction. Ids
/// are allocated once (shared by the map and the queue) and model names
/// once per model: this runs on every predict request.
#[derive(Default)]
struct Remembered {
    by_id: HashMap<Arc<str>, (Arc<str>, u64)>,
    order: VecDeque<Arc<str>>,
    models: Vec<Arc<str>>,
}

/// A bounded map of recent request ids to the version that answered.
#[derive(Default)]
pub struct RecentRequests {
    inner: Mutex<Remembered>,
}

impl RecentRequests {
    /// Remembers that `version` of `model` answered request `id`.
    pub fn remember(&self, id: &str, model: &str, version: u64) {
        let mut guard = self.inner.lock();
        let r = &mut *guard;
        if let Some(entry) = r.by_id.get_mut(id) {
            if &*entry.0 != model {
                entry.0 = intern(&mut r.models, model);
            }
            entry.1 = version;
            return;
        }
        let model = intern(&mut r.models, model);
        let id: Arc<str> = Arc::from(id);
        r.by_id.insert(id.clone(), (model, version));
        r.order.push_back(id);
        if r.order.len() > REMEMBERED {
            if let Some(old) = r.order.pop_front() {
                r.by_id.remove(&old);
            }
        }
    }

    /// The (model, version) that answered `id`.
    pub fn get(&self, id: &str) -> Option<(String, u64)> {
        self.inner.lock().by_id.get(id).map(|(m, v)| (m.to_string(), *v))
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
}
