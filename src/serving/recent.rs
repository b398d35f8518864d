//! The memory of recent request ids: which version answered each, so that
//! feedback naming a request id is attributed to the version that served
//! it, and taken once per answer. Bounded in entries and in bytes (oldest
//! forgotten first); ids are at most `limits::MAX_CLIENT_STRING` bytes.
//!
//! Ids live in two generations of fixed size, each allocated once, when
//! it is first used. New answers go to the current one; when it is full,
//! the previous one is forgotten at once and reused as the current. So no
//! table grows, rehashes or frees entry by entry while serving, and
//! remembering costs the same on every request. (A single map with an
//! eviction queue stalled the request that made it grow or rehash, for 8
//! to 33 ms at 28,000 to 150,000 ids, and again every few million requests
//! once its tombstones filled it.)

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::limits::MAX_CLIENT_STRING;

/// Request ids one generation holds at most: at least the last
/// `GENERATION` ids are remembered (while their bytes fit
/// [`GENERATION_ID_BYTES`]), at most twice as many.
pub const GENERATION: usize = 100_000;
/// Request ids remembered at most (both generations).
pub const REMEMBERED: usize = 2 * GENERATION;
/// Bytes of ids one generation holds at most.
pub const GENERATION_ID_BYTES: usize = 4 << 20;
// 100,000 ids of up to 41 bytes (UUIDs take 36) fit a generation
const _: () = assert!(GENERATION * 41 <= GENERATION_ID_BYTES);
/// Bytes the remembered ids may take at most: both generations' tables and
/// ids.
pub const REMEMBERED_BYTES: usize = 16 << 20;

/// What one answered request left behind; its id is `ids[start..start+len]`
/// of its generation.
#[derive(Clone, Copy)]
struct Slot {
    version: u64,
    start: u32,
    /// Index into `Remembered::models`.
    model: u32,
    len: u16,
    /// Feedback for this answer was taken (it is accepted once).
    feedback_taken: bool,
}

/// One generation: a table sized for [`GENERATION`] ids (never grown, and
/// never left with tombstones: the current generation only gains ids) and
/// the ids' bytes, back to back.
struct Generation {
    table: HashTable<Slot>,
    ids: Vec<u8>,
}

impl Generation {
    /// Unallocated: a server that never answers a request keeps no table.
    fn new() -> Self {
        Generation {
            table: HashTable::new(),
            ids: Vec::new(),
        }
    }

    /// Allocates the table and the id buffer, once per generation (a
    /// cleared generation keeps them).
    fn allocate(&mut self) {
        if self.ids.capacity() == 0 {
            self.table = HashTable::with_capacity(GENERATION);
            self.ids = Vec::with_capacity(GENERATION_ID_BYTES);
        }
    }

    fn id_range(slot: &Slot) -> Range<usize> {
        slot.start as usize..slot.start as usize + slot.len as usize
    }

    fn find(&self, hash: u64, id: &[u8]) -> Option<&Slot> {
        self.table.find(hash, |s| &self.ids[Self::id_range(s)] == id)
    }

    fn find_mut(&mut self, hash: u64, id: &[u8]) -> Option<&mut Slot> {
        let ids = &self.ids;
        self.table.find_mut(hash, |s| &ids[Self::id_range(s)] == id)
    }

    fn has_room_for(&self, id: &[u8]) -> bool {
        self.table.len() < GENERATION && self.ids.len() + id.len() <= GENERATION_ID_BYTES
    }

    /// Forgets an id if held (its bytes stay until the generation is
    /// cleared).
    fn remove(&mut self, hash: u64, id: &[u8]) {
        let ids = &self.ids;
        if let Ok(entry) = self.table.find_entry(hash, |s| &ids[Self::id_range(s)] == id) {
            entry.remove();
        }
    }

    /// Adds an id known to be absent; the caller made room.
    fn insert(&mut self, hash: u64, id: &[u8], model: u32, version: u64, hasher: &RandomState) {
        self.allocate();
        let slot = Slot {
            version,
            start: self.ids.len() as u32,
            model,
            len: id.len() as u16,
            feedback_taken: false,
        };
        self.ids.extend_from_slice(id);
        let ids = &self.ids;
        // within capacity, so the hasher is never called
        self.table
            .insert_unique(hash, slot, |s| hasher.hash_one(&ids[Self::id_range(s)]));
    }

    fn clear(&mut self) {
        self.table.clear();
        self.ids.clear();
    }
}

/// The two generations and the models their slots name.
struct Remembered {
    current: Generation,
    previous: Generation,
    models: Vec<Box<str>>,
}

impl Remembered {
    fn find(&self, hash: u64, id: &[u8]) -> Option<&Slot> {
        self.current
            .find(hash, id)
            .or_else(|| self.previous.find(hash, id))
    }
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
pub struct RecentRequests {
    inner: Mutex<Remembered>,
    /// Keyed (per process) so that callers cannot aim ids at one bucket;
    /// ids are hashed before the lock is taken.
    hasher: RandomState,
}

impl Default for RecentRequests {
    fn default() -> Self {
        RecentRequests {
            inner: Mutex::new(Remembered {
                current: Generation::new(),
                previous: Generation::new(),
                models: Vec::new(),
            }),
            hasher: RandomState::new(),
        }
    }
}

impl RecentRequests {
    /// Remembers that `version` of `model` answered request `id`. An id
    /// answered again is a new answer: it may take feedback again.
    pub fn remember(&self, id: &str, model: &str, version: u64) {
        // the request path refused longer ids before the request ran
        if id.is_empty() || id.len() > MAX_CLIENT_STRING {
            return;
        }
        let key = id.as_bytes();
        let hash = self.hasher.hash_one(key);
        let mut guard = self.inner.lock();
        let r = &mut *guard;
        let model = intern(&mut r.models, model);
        if let Some(slot) = r.current.find_mut(hash, key) {
            slot.model = model;
            slot.version = version;
            slot.feedback_taken = false;
            return;
        }
        // an id of the previous generation moves to the current one (the
        // previous only loses ids, so its table gets tombstones, never a
        // rehash)
        r.previous.remove(hash, key);
        if !r.current.has_room_for(key) {
            std::mem::swap(&mut r.current, &mut r.previous);
            r.current.clear();
        }
        r.current.insert(hash, key, model, version, &self.hasher);
    }

    /// The (model, version) that answered `id`.
    pub fn get(&self, id: &str) -> Option<(String, u64)> {
        let key = id.as_bytes();
        let hash = self.hasher.hash_one(key);
        let r = self.inner.lock();
        r.find(hash, key)
            .map(|s| (r.models[s.model as usize].to_string(), s.version))
    }

    /// Claims the one feedback value the answer to `id` by `model` may get.
    pub fn claim_feedback(&self, id: &str, model: &str) -> Claim {
        let key = id.as_bytes();
        let hash = self.hasher.hash_one(key);
        let mut guard = self.inner.lock();
        let r = &mut *guard;
        let models = &r.models;
        let slot = match r.current.find_mut(hash, key) {
            Some(slot) => Some(slot),
            None => r.previous.find_mut(hash, key),
        };
        match slot {
            None => Claim::Unknown,
            Some(s) if &*models[s.model as usize] != model => {
                Claim::OtherModel(models[s.model as usize].to_string())
            }
            Some(s) if s.feedback_taken => Claim::AlreadyTaken,
            Some(s) => {
                s.feedback_taken = true;
                Claim::Granted(s.version)
            }
        }
    }

    /// (ids, bytes) held now; the bytes count both generations' tables
    /// (allocated once) and the ids' bytes.
    pub fn size(&self) -> (usize, usize) {
        let r = self.inner.lock();
        let generation = |g: &Generation| (g.table.len(), g.table.allocation_size() + g.ids.len());
        let (a, b) = (generation(&r.current), generation(&r.previous));
        (a.0 + b.0, a.1 + b.1)
    }
}

/// The index of a model name (models are few; unloaded names stay, which
/// is bounded by the names the repository ever had).
fn intern(models: &mut Vec<Box<str>>, model: &str) -> u32 {
    match models.iter().position(|m| &**m == model) {
        Some(i) => i as u32,
        None => {
            models.push(model.into());
            (models.len() - 1) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(recent: &RecentRequests, ids: impl Iterator<Item = String>) -> usize {
        ids.filter(|id| recent.get(id).is_some()).count()
    }

    #[test]
    fn remembers_the_latest_answer_and_forgets_the_oldest_generation_first() {
        let recent = RecentRequests::default();
        recent.remember("a", "digits", 1);
        recent.remember("b", "mlp_wide", 1);
        recent.remember("a", "digits", 2); // the same id answered again
        assert_eq!(recent.get("a"), Some(("digits".to_string(), 2)));
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 1)));
        assert_eq!(recent.get("c"), None);
        // fill the current generation, then start the next: "a" is kept
        for i in 0..GENERATION - 1 {
            recent.remember(&format!("id-{i}"), "digits", 1);
        }
        assert_eq!(recent.size().0, GENERATION + 1);
        assert_eq!(recent.get("a"), Some(("digits".to_string(), 2)));
        // "b" answered again moves to the current generation
        recent.remember("b", "mlp_wide", 3);
        for i in GENERATION - 1..2 * GENERATION - 3 {
            recent.remember(&format!("id-{i}"), "digits", 1);
        }
        assert_eq!(recent.size().0, 2 * GENERATION - 1);
        assert_eq!(recent.get("a"), Some(("digits".to_string(), 2)));
        // the next id starts a generation: the oldest one, with "a", goes
        recent.remember("next", "digits", 1);
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 3)));
        assert_eq!(recent.size().0, GENERATION + 1);
        // at least the last GENERATION ids are held
        let last = (GENERATION - 2..2 * GENERATION - 3).map(|i| format!("id-{i}"));
        assert_eq!(held(&recent, last), GENERATION - 1);
        assert_eq!(recent.inner.lock().models.len(), 2);
    }

    #[test]
    fn remembering_never_reallocates_a_table_or_buffer() {
        let recent = RecentRequests::default();
        let capacity = |r: &RecentRequests| {
            let r = r.inner.lock();
            let g = |g: &Generation| (g.table.allocation_size(), g.ids.capacity());
            (g(&r.current), g(&r.previous))
        };
        assert_eq!(capacity(&recent), ((0, 0), (0, 0)), "allocated before use");
        let mut before = None;
        for i in 0..3 * GENERATION + 7 {
            if i == GENERATION + 1 {
                // both generations are in use
                before = Some(capacity(&recent));
            }
            recent.remember(&format!("{i:036}"), "digits", 1);
            if i % 3 == 0 {
                // answered again from the previous generation: moved
                recent.remember(&format!("{:036}", i.saturating_sub(GENERATION)), "digits", 2);
            }
        }
        let before = before.unwrap();
        assert!(before.0 .1 >= GENERATION_ID_BYTES && before.1 .1 >= GENERATION_ID_BYTES);
        let after = capacity(&recent);
        let (c, p) = (after.0, after.1);
        let (bc, bp) = (before.0, before.1);
        assert!(
            [c, p] == [bc, bp] || [c, p] == [bp, bc],
            "tables or id buffers were reallocated: {before:?} -> {after:?}"
        );
    }

    #[test]
    fn long_ids_are_bounded_in_bytes() {
        let recent = RecentRequests::default();
        let long = "x".repeat(MAX_CLIENT_STRING - 8);
        for i in 0..REMEMBERED {
            recent.remember(&format!("{long}{i:08}"), "digits", 1);
        }
        let (ids, bytes) = recent.size();
        assert!(bytes <= REMEMBERED_BYTES, "{bytes} bytes");
        // the byte bound binds first: a generation holds this many
        let per_generation = GENERATION_ID_BYTES / MAX_CLIENT_STRING;
        assert_eq!(ids, per_generation + REMEMBERED % per_generation);
        let last = (REMEMBERED - per_generation..REMEMBERED).map(|i| format!("{long}{i:08}"));
        assert_eq!(held(&recent, last), per_generation);
        // longer ids are not remembered at all
        recent.remember(&"y".repeat(MAX_CLIENT_STRING + 1), "digits", 1);
        assert_eq!(recent.size().0, ids);
    }

    #[test]
    fn both_full_generations_fit_the_byte_bound() {
        let mut g = Generation::new();
        g.allocate();
        let most = 2 * (g.table.allocation_size() + GENERATION_ID_BYTES);
        assert!(most <= REMEMBERED_BYTES, "{most} bytes");
        // and a generation's table holds GENERATION ids without growing
        assert!(g.table.capacity() >= GENERATION);
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
        // in the previous generation a claim still holds, once
        recent.remember("r3", "digits", 4);
        for i in 0..GENERATION {
            recent.remember(&format!("id-{i}"), "digits", 1);
        }
        assert_eq!(recent.claim_feedback("r3", "digits"), Claim::Granted(4));
        assert_eq!(recent.claim_feedback("r3", "digits"), Claim::AlreadyTaken);
        assert_eq!(recent.claim_feedback("r1", "digits"), Claim::AlreadyTaken);
    }
}
