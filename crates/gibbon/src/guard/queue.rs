//! The human review queue: escalated inputs in SQLite (WAL journal, `synchronous=FULL`, one
//! transaction per write, versioned migrations in `PRAGMA user_version`).
//!
//! Durability: a write returns only after its transaction has committed and, with
//! `synchronous=FULL`, after the WAL has been fsynced, so an `escalate` answer or a reviewer's
//! 200 survives a kill -9 of the server and an operating-system crash (`NORMAL` in WAL mode
//! survives the former but may lose the last commits on power loss).
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("review database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No item with this id.
    #[error("no review item {0}")]
    NotFound(String),
    /// The item was decided already (by an earlier or a concurrent request).
    #[error("review item {0} was already decided")]
    AlreadyDecided(String),
    #[error("review database {path}: schema version {found} is newer than this gibbon's {known}")]
    FutureSchema { path: String, found: i64, known: i64 },
}

/// The migrations, in order: migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["CREATE TABLE items (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        shape TEXT NOT NULL,
        pixels BLOB NOT NULL,
        label INTEGER NOT NULL,
        confidence REAL NOT NULL,
        scores TEXT NOT NULL,
        rule TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'decided')),
        reviewer TEXT,
        reviewed_label INTEGER,
        note TEXT,
        decided_at TEXT
    );
    CREATE INDEX items_status ON items (status, created_at);"];

/// An escalated input as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewItem {
    pub id: String,
    pub created_at: String,
    pub shape: Vec<i64>,
    #[serde(skip)]
    pub pixels: Vec<f32>,
    pub label: i64,
    pub confidence: f64,
    pub scores: serde_json::Value,
    pub rule: String,
    pub status: String,
    pub reviewer: Option<String>,
    pub reviewed_label: Option<i64>,
    pub note: Option<String>,
    pub decided_at: Option<String>,
}

/// The queue over one SQLite connection (wrap it in a mutex to share it).
pub struct ReviewQueue {
    conn: Connection,
}

impl ReviewQueue {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<ReviewQueue, QueueError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            let path = path.display().to_string();
            return Err(QueueError::FutureSchema { path, found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(ReviewQueue { conn })
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, QueueError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Stores a new pending item; returns after the commit.
    pub fn insert(&mut self, item: &ReviewItem) -> Result<(), QueueError> {
        let blob: Vec<u8> = item.pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO items (id, created_at, shape, pixels, label, confidence, scores, rule, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')",
            params![
                item.id,
                item.created_at,
                serde_json::to_string(&item.shape).unwrap_or_default(),
                blob,
                item.label,
                item.confidence,
                item.scores.to_string(),
                item.rule
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Pending items, oldest first, at most `limit`.
    pub fn pending(&self, limit: usize) -> Result<Vec<ReviewItem>, QueueError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM items WHERE status = 'pending' ORDER BY created_at, id LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], row_to_item)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of pending items.
    pub fn pending_count(&self) -> Result<u64, QueueError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM items WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// One item by id.
    pub fn get(&self, id: &str) -> Result<ReviewItem, QueueError> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM items WHERE id = ?1"), [id], row_to_item)
            .optional()?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// Records a reviewer's decision; an item is decided once ([`QueueError::AlreadyDecided`]
    /// for every later attempt). Returns after the commit.
    pub fn decide(
        &mut self,
        id: &str,
        reviewer: &str,
        label: i64,
        note: &str,
        now: &str,
    ) -> Result<(), QueueError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE items SET status = 'decided', reviewer = ?2, reviewed_label = ?3, note = ?4,
             decided_at = ?5 WHERE id = ?1 AND status = 'pending'",
            params![id, reviewer, label, note, now],
        )?;
        if changed == 0 {
            let exists: Option<String> = tx
                .query_row("SELECT status FROM items WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            return Err(match exists {
                Some(_) => QueueError::AlreadyDecided(id.to_string()),
                None => QueueError::NotFound(id.to_string()),
            });
        }
        tx.commit()?;
        Ok(())
    }
}

const COLUMNS: &str = "id, created_at, shape, pixels, label, confidence, scores, rule, status, \
                       reviewer, reviewed_label, note, decided_at";

fn row_to_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewItem> {
    let shape: String = r.get(2)?;
    let blob: Vec<u8> = r.get(3)?;
    let scores: String = r.get(6)?;
    Ok(ReviewItem {
        id: r.get(0)?,
        created_at: r.get(1)?,
        shape: serde_json::from_str(&shape).unwrap_or_default(),
        pixels: blob
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        label: r.get(4)?,
        confidence: r.get(5)?,
        scores: serde_json::from_str(&scores).unwrap_or(serde_json::Value::Null),
        rule: r.get(7)?,
        status: r.get(8)?,
        reviewer: r.get(9)?,
        reviewed_label: r.get(10)?,
        note: r.get(11)?,
        decided_at: r.get(12)?,
    })
}
