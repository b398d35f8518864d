//! Durable rollout state and the audit log in SQLite under `--state-dir`.
//! A rollout's state and the event that explains it are written in one
//! transaction, before the policy they imply is applied.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::machine::{Event, Rollout};

/// The record format this code writes: 1 = weights as percent strings
/// (`"10%"`); 0 (before) = weights as numbers of basis points.
const FORMAT: i64 = 1;

/// Brings records of an older format to [`FORMAT`], in one transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(err)?;
    if version >= FORMAT {
        return Ok(());
    }
    conn.execute_batch("BEGIN").map_err(err)?;
    let result = (|| {
        for (table, column) in [("rollouts", "state"), ("events", "event")] {
            let rows: Vec<(i64, String)> = conn
                .prepare(&format!("SELECT id, {column} FROM {table}"))
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<Result<_, _>>()
                })
                .map_err(err)?;
            for (id, text) in rows {
                let mut value: serde_json::Value = serde_json::from_str(&text).map_err(record)?;
                if weights_to_percent(&mut value) {
                    conn.execute(
                        &format!("UPDATE {table} SET {column} = ?1 WHERE id = ?2"),
                        params![value.to_string(), id],
                    )
                    .map_err(err)?;
                }
            }
        }
        conn.execute_batch(&format!("PRAGMA user_version = {FORMAT}"))
            .map_err(err)
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Rewrites format-0 weights (numbers of basis points) in a stored rollout
/// or event as percent strings; true when something changed.
fn weights_to_percent(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    fn fix(v: &mut Value) -> bool {
        match v.as_u64().and_then(|bp| crate::policy::Weight::from_bp(bp).ok()) {
            Some(w) => {
                *v = Value::String(w.to_string());
                true
            }
            None => false,
        }
    }
    let mut changed = false;
    if let Some(w) = value.get_mut("weight") {
        changed |= fix(w);
    }
    if let Some(spec) = value.get_mut("spec") {
        for list in ["steps", "then_canary"] {
            for step in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(w) = step.get_mut("weight") {
                    changed |= fix(w);
                }
            }
        }
        if let Some(split) = spec.get_mut("split") {
            changed |= fix(split);
        }
    }
    changed
}

/// The state database.
pub struct Store {
    conn: Mutex<Connection>,
}

/// Why the state database could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {0}: {1}")]
    Directory(String, String),
    #[error("state database: {0}")]
    Database(String),
    #[error("state database holds an unreadable record: {0}")]
    Record(String),
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn record(e: serde_json::Error) -> StoreError {
    StoreError::Record(e.to_string())
}

impl Store {
    /// Opens (creating if needed) `dir/switchyard.db`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Directory(dir.display().to_string(), e.to_string()))?;
        let conn = Connection::open(dir.join("switchyard.db")).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS rollouts (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 model TEXT NOT NULL,
                 active INTEGER NOT NULL,
                 state TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 rollout_id INTEGER NOT NULL,
                 model TEXT NOT NULL,
                 event TEXT NOT NULL);",
        )
        .map_err(err)?;
        migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Reserves an id for a new rollout of `model`.
    pub fn next_id(&self, model: &str) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO rollouts (model, active, state) VALUES (?1, 0, '{}')",
            params![model],
        )
        .map_err(err)?;
        Ok(conn.last_insert_rowid())
    }

    /// Saves the rollout and (when given) its event atomically.
    pub fn save(&self, r: &Rollout, event: Option<&Event>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(err)?;
        let state = serde_json::to_string(r).map_err(record)?;
        tx.execute(
            "UPDATE rollouts SET active = ?1, state = ?2 WHERE id = ?3",
            params![!r.phase.is_final() as i64, state, r.id],
        )
        .map_err(err)?;
        if let Some(e) = event {
            tx.execute(
                "INSERT INTO events (rollout_id, model, event) VALUES (?1, ?2, ?3)",
                params![r.id, r.model, serde_json::to_string(e).map_err(record)?],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Appends an event of a rollout this store does not hold (a fleet's:
    /// its state lives in the cluster; this is the replica's audit log).
    pub fn record_event(&self, model: &str, rollout_id: i64, event: &Event) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO events (rollout_id, model, event) VALUES (?1, ?2, ?3)",
            params![rollout_id, model, serde_json::to_string(event).map_err(record)?],
        )
        .map_err(err)?;
        Ok(())
    }

    /// Rollouts not yet Promoted or Aborted.
    pub fn active(&self) -> Result<Vec<Rollout>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT state FROM rollouts WHERE active = 1 ORDER BY id")
            .map_err(err)?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(err)?;
        rows.map(|r| {
            r.map_err(err)
                .and_then(|s| serde_json::from_str(&s).map_err(record))
        })
        .collect()
    }

    /// The newest rollout of `model`.
    pub fn latest(&self, model: &str) -> Result<Option<Rollout>, StoreError> {
        let conn = self.conn.lock();
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM rollouts WHERE model = ?1 AND state != '{}' ORDER BY id DESC LIMIT 1",
                params![model],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        state
            .map(|s| serde_json::from_str(&s).map_err(record))
            .transpose()
    }

    /// Every event of `model`, oldest first.
    pub fn events(&self, model: &str) -> Result<Vec<(i64, Event)>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT rollout_id, event FROM events WHERE model = ?1 ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map(params![model], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        rows.map(|r| {
            r.map_err(err)
                .and_then(|(id, s)| serde_json::from_str(&s).map(|e| (id, e)).map_err(record))
        })
        .collect()
    }

    /// The newest `limit` events of `model`, oldest first.
    pub fn recent_events(&self, model: &str, limit: usize) -> Result<Vec<(i64, Event)>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT rollout_id, event FROM events WHERE model = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(err)?;
        let rows = stmt
            .query_map(params![model, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        let mut events = rows
            .map(|r| {
                r.map_err(err)
                    .and_then(|(id, s)| serde_json::from_str(&s).map(|e| (id, e)).map_err(record))
            })
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_with_basis_point_weights_are_migrated_to_percent() {
        let dir = tempfile::tempdir().unwrap();
        {
            // a state database as the previous release wrote it
            let conn = Connection::open(dir.path().join("switchyard.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE rollouts (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
                     active INTEGER NOT NULL, state TEXT NOT NULL);
                 CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL,
                     model TEXT NOT NULL, event TEXT NOT NULL);",
            )
            .unwrap();
            let state = serde_json::json!({
                "id": 1, "model": "digits", "stable": 1, "candidate": 2,
                "spec": {"candidate": 2, "strategy": "canary",
                         "steps": [{"weight": 1000, "bake": "30s"}, {"weight": 10000}],
                         "analysis": {"interval": "10s", "min_requests": 50, "max_error_rate_ratio": 1.1,
                                      "max_error_rate_delta": 0.005, "max_p95_ratio": 1.2,
                                      "min_feedback_delta": -0.1, "failure_limit": 2, "progress_deadline": "10m"},
                         "skip_validation": false},
                "phase": "progressing", "step": 0, "started_at": 1.0, "step_started_at": 1.0,
                "inconclusive_since": null, "failures": 0, "last_analysis_at": null,
                "last_analysis": null, "reason": null, "baseline": null, "ab_result": null
            });
            conn.execute(
                "INSERT INTO rollouts (model, active, state) VALUES ('digits', 1, ?1)",
                params![state.to_string()],
            )
            .unwrap();
            let event = serde_json::json!({"at": 1.0, "phase": "progressing", "step": 0, "weight": 1000,
                "decision": "started", "metrics": null, "actor": "admin"});
            conn.execute(
                "INSERT INTO events (rollout_id, model, event) VALUES (1, 'digits', ?1)",
                params![event.to_string()],
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let active = store.active().unwrap();
        assert_eq!(active.len(), 1);
        match &active[0].spec.strategy {
            crate::rollout::Strategy::Canary { steps } => {
                assert_eq!(steps[0].weight.bp(), 1000);
                assert_eq!(steps[1].weight.bp(), 10_000);
            }
            other => panic!("{other:?}"),
        }
        let events = store.events("digits").unwrap();
        assert_eq!(events[0].1.weight.bp(), 1000);
        // opening again changes nothing
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.events("digits").unwrap()[0].1.weight.bp(), 1000);
    }
}
