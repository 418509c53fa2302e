//! The initial snapshot (`snapshot.mode=initial`), read the way Debezium reads it: the slot
//! is created over the replication connection with `EXPORT_SNAPSHOT`, a second (normal)
//! connection imports that snapshot in a `REPEATABLE READ` transaction and reads every
//! captured table through a cursor, a batch per poll, and streaming then starts at the
//! slot's consistent point. Every row the snapshot holds is visible in it and every later
//! change is in the slot, so nothing is read twice or missed.
//!
//! An exported snapshot lives only as long as the connection that exported it: a task
//! restarted before its snapshot was stored whole cannot resume it, so it drops the slot
//! and takes the snapshot again (as Debezium does).

use std::collections::VecDeque;

use pg_wire::pgoutput::{Column, Relation};
use pg_wire::{quote_ident, task_error, Client, ConnectParams, Lsn, Row};
use wasm_connect_sdk::TaskError;

/// The cursor the snapshot reads a table through.
const CURSOR: &str = "wc_snapshot";

/// A snapshot in progress.
pub struct Snapshot {
    client: Client,
    /// Where streaming starts: every change committed after it is in the slot.
    pub consistent_point: Lsn,
    /// The tables still to open, as (schema, table).
    pending: VecDeque<(String, String)>,
    /// The table whose cursor is open, and how many of its rows were read.
    current: Option<(Relation, u64)>,
}

/// One batch of rows of one table.
pub struct Batch {
    pub relation: Relation,
    pub rows: Vec<Row>,
    /// Rows of this table read so far, this batch included.
    pub read: u64,
}

/// Creates the slot on the replication connection `stream`, exporting its snapshot, and
/// imports that snapshot on a new connection. `stream` must run no other command until the
/// snapshot is imported (the next command ends the export); it returns here with the
/// snapshot imported. `include` filters the publication's tables (`schema.table`; empty:
/// all).
pub fn begin(
    stream: &mut Client,
    params: &ConnectParams,
    slot: &str,
    publication: &str,
    include: &[String],
) -> Result<Snapshot, TaskError> {
    let created = stream
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .map_err(|e| TaskError::Fatal(format!("cannot create replication slot {slot} (the user needs REPLICATION and the server wal_level=logical and a free max_replication_slots): {e}")))?;
    let (consistent_point, name) = match created.rows.first().map(Vec::as_slice) {
        Some([_, Some(lsn), Some(name), ..]) => (
            lsn.parse::<Lsn>().map_err(|e| {
                TaskError::Fatal(format!("CREATE_REPLICATION_SLOT answered a bad LSN: {e}"))
            })?,
            name.clone(),
        ),
        _ => {
            return Err(TaskError::Fatal(
                "CREATE_REPLICATION_SLOT answered no consistent point and snapshot name".into(),
            ))
        }
    };
    let mut client = Client::connect(params).map_err(task_error)?;
    client
        .simple_query(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            name.replace('\'', "''")
        ))
        .map_err(|e| {
            TaskError::Fatal(format!("cannot import the slot's snapshot {name:?}: {e}"))
        })?;
    let tables = client
        .query(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[Some(publication)],
        )
        .map_err(task_error)?;
    let pending = tables
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(schema), Some(table)] => Some((schema.clone(), table.clone())),
            _ => None,
        })
        .filter(|(schema, table)| {
            include.is_empty() || include.contains(&format!("{schema}.{table}"))
        })
        .collect();
    Ok(Snapshot {
        client,
        consistent_point,
        pending,
        current: None,
    })
}

impl Snapshot {
    /// The next batch of at most `limit` rows, or `None` once every table was read (the
    /// snapshot's transaction is then over).
    pub fn next(&mut self, limit: u32) -> Result<Option<Batch>, TaskError> {
        let fail = |e| {
            TaskError::Fatal(format!(
                "the snapshot read failed: {e}; restart the task to take the snapshot again"
            ))
        };
        loop {
            if self.current.is_none() {
                let Some((schema, table)) = self.pending.pop_front() else {
                    self.client.simple_query("COMMIT").map_err(fail)?;
                    return Ok(None);
                };
                let relation = open(&mut self.client, schema, table).map_err(fail)?;
                self.current = Some((relation, 0));
            }
            let rows = self
                .client
                .simple_query(&format!("FETCH {limit} FROM {CURSOR}"))
                .map_err(fail)?
                .rows;
            let done = rows.len() < limit as usize;
            if done {
                self.client
                    .simple_query(&format!("CLOSE {CURSOR}"))
                    .map_err(fail)?;
            }
            let Some((relation, read)) = self.current.as_mut() else {
                continue;
            };
            *read += rows.len() as u64;
            let batch = Batch {
                relation: relation.clone(),
                rows,
                read: *read,
            };
            if done {
                self.current = None;
            }
            if !batch.rows.is_empty() {
                return Ok(Some(batch));
            }
        }
    }

    /// Ends the snapshot's connection.
    pub fn close(self) {
        self.client.close();
    }
}

/// Describes a table as the stream would (the columns the stream sends, in order, typed,
/// replica-identity columns marked) and opens the cursor over it.
fn open(client: &mut Client, schema: String, table: String) -> Result<Relation, pg_wire::Error> {
    let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
    let described = client.query(
        "SELECT a.attname, a.atttypid::int8,
                    coalesce(a.attnum = ANY(i.indkey), c.relreplident = 'f')
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             LEFT JOIN pg_index i ON i.indrelid = c.oid
                  AND (i.indisreplident OR (c.relreplident = 'd' AND i.indisprimary))
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
             ORDER BY a.attnum",
        &[Some(&qualified)],
    )?;
    let columns: Vec<Column> = described
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Some(name), Some(oid), Some(key)] => Some(Column {
                name: name.clone(),
                type_oid: oid.parse().unwrap_or(0),
                key: key == "t",
            }),
            _ => None,
        })
        .collect();
    let list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    client.simple_query(&format!(
        "DECLARE {CURSOR} NO SCROLL CURSOR FOR SELECT {} FROM {qualified}",
        list.join(", ")
    ))?;
    Ok(Relation {
        id: 0,
        schema,
        name: table,
        columns,
    })
}
