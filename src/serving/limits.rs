//! *Limits* on what a client can make the server hold: every string a
//! client chooses and the server may keep (request ids, user keys, feedback
//! ids) is capped here, once, for every front end; and the *body budget*
//! bounds the bytes of request bodies held at once, whatever the number of
//! connections.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest client-chosen id or key accepted, in bytes (request ids, user
/// keys, V2 `id`, feedback ids). Longer ones are refused with 400, never
/// truncated: a truncated id would silently name another request.
pub const MAX_CLIENT_STRING: usize = 256;

/// A client-supplied string over its cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {len} bytes long; at most {max} bytes are accepted")]
pub struct TooLong {
    /// What the string is, as the client knows it (`"x-request-id"`, `"id"`).
    pub what: String,
    pub len: usize,
    pub max: usize,
}

/// Checks one client-chosen id or key against [`MAX_CLIENT_STRING`].
pub fn client_string(what: &str, value: &str) -> Result<(), TooLong> {
    if value.len() > MAX_CLIENT_STRING {
        return Err(TooLong {
            what: what.to_string(),
            len: value.len(),
            max: MAX_CLIENT_STRING,
        });
    }
    Ok(())
}

/// The bytes of request bodies the server holds at once (being read, or
/// held by requests in flight). A request reserves its body's size before
/// reading it (or chunk by chunk when the size is not announced) and gives
/// it back when its answer is ready; beyond the budget requests are shed.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved by one request; given back on drop.
pub struct BodyPermit {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl BodyPermit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl BodyBudget {
    /// A budget of `total` bytes (at least one).
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// An empty reservation, to grow with [`reserve`](Self::reserve).
    pub fn permit(&self) -> BodyPermit {
        BodyPermit {
            permits: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds `bytes` to `permit`; false (nothing added) when the budget has
    /// not that much left.
    pub fn reserve(&self, permit: &mut BodyPermit, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(bytes) else { return false };
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                permit.permits.push(p);
                permit.bytes += bytes;
                true
            }
            Err(_) => false,
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }
}

/// The default body budget: an eighth of the memory the process may use
/// (the cgroup limit of its container when there is one, else the
/// machine's memory), at least `body_limit` so one largest request fits.
/// Decoding a request takes up to about three times its body, and the
/// models need the rest.
pub fn default_body_budget(body_limit: usize) -> usize {
    let memory = cgroup_memory_limit().or_else(machine_memory).unwrap_or(8 << 30);
    (memory / 8).max(body_limit)
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), when one is set.
pub fn cgroup_memory_limit() -> Option<usize> {
    let read = |path: String| std::fs::read_to_string(path).ok();
    let groups = read("/proc/self/cgroup".into()).unwrap_or_default();
    let mut candidates = Vec::new();
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    // "max" (v2) parses as no number: no limit
    let bytes: u64 = candidates.into_iter().find_map(read)?.trim().parse().ok()?;
    // cgroup v1 reports "no limit" as a huge page-aligned number
    (bytes < (1 << 60)).then(|| usize::try_from(bytes).ok()).flatten()
}

/// Total memory of the machine (`MemTotal` of /proc/meminfo).
fn machine_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings_are_capped_not_truncated() {
        assert!(client_string("id", &"x".repeat(MAX_CLIENT_STRING)).is_ok());
        let err = client_string("id", &"x".repeat(MAX_CLIENT_STRING + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "id is {} bytes long; at most 256 bytes are accepted",
                MAX_CLIENT_STRING + 1
            )
        );
    }

    #[test]
    fn the_budget_is_given_back_when_permits_drop() {
        let budget = BodyBudget::new(100);
        let mut a = budget.permit();
        assert!(budget.reserve(&mut a, 60));
        assert!(budget.reserve(&mut a, 30));
        assert_eq!(a.bytes(), 90);
        let mut b = budget.permit();
        assert!(!budget.reserve(&mut b, 20), "only 10 bytes left");
        assert!(budget.reserve(&mut b, 10));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 10);
        assert!(budget.reserve(&mut b, 0));
    }

    #[test]
    fn the_default_budget_fits_one_largest_body() {
        assert!(default_body_budget(8 << 20) >= 8 << 20);
        assert!(default_body_budget(usize::MAX / 2) >= usize::MAX / 2);
    }
}
