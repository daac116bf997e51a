//! A small pool of read-only connections. Reads run on tokio's blocking pool, each in one read
//! transaction (a consistent snapshot); WAL lets them run while the writer commits.
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::store::{Result, StoreError};

pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    path: PathBuf,
    busy_timeout: Duration,
}

impl Readers {
    pub fn open(path: PathBuf, size: usize, busy_timeout: Duration) -> Result<Self> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_reader(&path, busy_timeout))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            idle: Mutex::new(idle),
            permits: Semaphore::new(size),
            path,
            busy_timeout,
        })
    }

    /// Runs `read` on a pooled connection, off the async workers.
    pub async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path, self.busy_timeout)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = in_snapshot(&conn, read);
            (conn, result)
        })
        .await
        .map_err(StoreError::backend("read task"))?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        result
    }
}

fn in_snapshot<T>(conn: &Connection, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = conn
        .unchecked_transaction()
        .map_err(StoreError::backend("begin read"))?;
    let result = read(&tx)?;
    tx.finish().map_err(StoreError::backend("end read"))?;
    Ok(result)
}

fn open_reader(path: &PathBuf, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(path, flags).map_err(StoreError::backend("open reader"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(StoreError::backend("set reader busy timeout"))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(StoreError::backend("make reader read-only"))?;
    Ok(conn)
}
