//! Durable rollout state and the audit log in SQLite under `--state-dir`.
//! A rollout's state and the event that explains it are written in one
//! transaction, before the policy they imply is applied.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::machine::{Event, Rollout};

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
}
