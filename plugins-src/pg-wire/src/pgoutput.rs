//! Decodes the messages of the `pgoutput` logical decoding plugin (protocol version 1), as
//! carried by [`crate::ReplicationMessage::XLogData`]: transactions, relations and row
//! changes with every column as text. Untrusted input: a short or malformed message is an
//! error, never a panic.

use bytes::{Buf, Bytes};

use crate::{Error, Lsn};

/// One column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
}

/// A table as the stream describes it, sent before its first change (and after it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the change did not touch (not sent).
    Unchanged,
    Text(String),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    Begin {
        final_lsn: Lsn,
        commit_time_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_us: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    /// `old` is the old key (or whole row with REPLICA IDENTITY FULL) when it changed.
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and Message: nothing a change record needs.
    Ignored(u8),
}

/// Decodes one message.
pub fn decode(mut data: Bytes) -> Result<PgOutput, Error> {
    let tag = u8(&mut data)?;
    let message = match tag {
        b'B' => PgOutput::Begin {
            final_lsn: Lsn(u64(&mut data)?),
            commit_time_us: u64(&mut data)? as i64,
            xid: u32(&mut data)?,
        },
        b'C' => {
            let _flags = u8(&mut data)?;
            PgOutput::Commit {
                commit_lsn: Lsn(u64(&mut data)?),
                end_lsn: Lsn(u64(&mut data)?),
                commit_time_us: u64(&mut data)? as i64,
            }
        }
        b'R' => {
            let id = u32(&mut data)?;
            let schema = cstr(&mut data)?;
            let name = cstr(&mut data)?;
            let _replica_identity = u8(&mut data)?;
            let count = u16(&mut data)?;
            let mut columns = Vec::with_capacity(usize::from(count).min(1600));
            for _ in 0..count {
                let flags = u8(&mut data)?;
                let name = cstr(&mut data)?;
                let type_oid = u32(&mut data)?;
                let _type_modifier = u32(&mut data)?;
                columns.push(Column {
                    name,
                    type_oid,
                    key: flags & 1 == 1,
                });
            }
            PgOutput::Relation(Relation {
                id,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = u32(&mut data)?;
            expect(&mut data, b'N')?;
            PgOutput::Insert {
                relation,
                new: tuple(&mut data)?,
            }
        }
        b'U' => {
            let relation = u32(&mut data)?;
            let old = match u8(&mut data)? {
                b'K' | b'O' => {
                    let old = tuple(&mut data)?;
                    expect(&mut data, b'N')?;
                    Some(old)
                }
                b'N' => None,
                other => return Err(bad(format!("update with tuple kind {:?}", other as char))),
            };
            PgOutput::Update {
                relation,
                old,
                new: tuple(&mut data)?,
            }
        }
        b'D' => {
            let relation = u32(&mut data)?;
            match u8(&mut data)? {
                b'K' | b'O' => {}
                other => return Err(bad(format!("delete with tuple kind {:?}", other as char))),
            }
            PgOutput::Delete {
                relation,
                old: tuple(&mut data)?,
            }
        }
        b'T' => {
            let count = u32(&mut data)?;
            let _options = u8(&mut data)?;
            let mut relations = Vec::with_capacity((count as usize).min(1024));
            for _ in 0..count {
                relations.push(u32(&mut data)?);
            }
            PgOutput::Truncate { relations }
        }
        b'O' | b'Y' | b'M' => return Ok(PgOutput::Ignored(tag)),
        other => return Err(bad(format!("unknown pgoutput message {:?}", other as char))),
    };
    if data.has_remaining() {
        return Err(bad(format!(
            "{} bytes after a {:?} message",
            data.remaining(),
            tag as char
        )));
    }
    Ok(message)
}

fn bad(why: String) -> Error {
    Error::Protocol(format!("pgoutput: {why}"))
}

fn short() -> Error {
    bad("message cut short".into())
}

fn u8(data: &mut Bytes) -> Result<u8, Error> {
    data.try_get_u8().map_err(|_| short())
}

fn u16(data: &mut Bytes) -> Result<u16, Error> {
    data.try_get_u16().map_err(|_| short())
}

fn u32(data: &mut Bytes) -> Result<u32, Error> {
    data.try_get_u32().map_err(|_| short())
}

fn u64(data: &mut Bytes) -> Result<u64, Error> {
    data.try_get_u64().map_err(|_| short())
}

fn expect(data: &mut Bytes, tag: u8) -> Result<(), Error> {
    match u8(data)? {
        found if found == tag => Ok(()),
        found => Err(bad(format!(
            "expected {:?}, found {:?}",
            tag as char, found as char
        ))),
    }
}

fn cstr(data: &mut Bytes) -> Result<String, Error> {
    let end = data.iter().position(|b| *b == 0).ok_or_else(short)?;
    let text = String::from_utf8_lossy(&data[..end]).into_owned();
    data.advance(end + 1);
    Ok(text)
}

fn tuple(data: &mut Bytes) -> Result<Vec<Datum>, Error> {
    let count = u16(data)?;
    let mut datums = Vec::with_capacity(usize::from(count).min(1600));
    for _ in 0..count {
        datums.push(match u8(data)? {
            b'n' => Datum::Null,
            b'u' => Datum::Unchanged,
            b't' => {
                let len = u32(data)? as usize;
                if data.remaining() < len {
                    return Err(short());
                }
                Datum::Text(String::from_utf8_lossy(&data.split_to(len)).into_owned())
            }
            other => return Err(bad(format!("column kind {:?}", other as char))),
        });
    }
    Ok(datums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn relation_message() -> BytesMut {
        let mut m = BytesMut::new();
        m.put_u8(b'R');
        m.put_u32(16384);
        m.put_slice(b"public\0orders\0");
        m.put_u8(b'd');
        m.put_u16(2);
        m.put_u8(1);
        m.put_slice(b"id\0");
        m.put_u32(20);
        m.put_i32(-1);
        m.put_u8(0);
        m.put_slice(b"note\0");
        m.put_u32(25);
        m.put_i32(-1);
        m
    }

    #[test]
    fn relations_and_changes_are_decoded() {
        let relation = decode(relation_message().freeze()).unwrap();
        let PgOutput::Relation(relation) = relation else {
            panic!("{relation:?}")
        };
        assert_eq!(
            (relation.schema.as_str(), relation.name.as_str()),
            ("public", "orders")
        );
        assert!(relation.columns[0].key && !relation.columns[1].key);
        let mut update = BytesMut::new();
        update.put_u8(b'U');
        update.put_u32(16384);
        update.put_u8(b'K');
        update.put_u16(2);
        update.put_u8(b't');
        update.put_u32(1);
        update.put_slice(b"7");
        update.put_u8(b'n');
        update.put_u8(b'N');
        update.put_u16(2);
        update.put_u8(b't');
        update.put_u32(1);
        update.put_slice(b"8");
        update.put_u8(b'u');
        assert_eq!(
            decode(update.freeze()).unwrap(),
            PgOutput::Update {
                relation: 16384,
                old: Some(vec![Datum::Text("7".into()), Datum::Null]),
                new: vec![Datum::Text("8".into()), Datum::Unchanged],
            }
        );
    }

    #[test]
    fn every_cut_is_an_error_not_a_panic() {
        let full = relation_message().freeze();
        for cut in 0..full.len() {
            assert!(decode(full.slice(..cut)).is_err(), "cut at {cut} accepted");
        }
        let mut long = relation_message();
        long.put_u8(0);
        assert!(decode(long.freeze()).is_err());
        assert!(decode(Bytes::from_static(b"Z")).is_err());
    }
}
