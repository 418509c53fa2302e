//! The blocking connection: [`Client`] owns one `std::net::TcpStream`, speaks the frontend /
//! backend protocol with `postgres-protocol`'s codecs, and bounds every read and write with
//! the timeout of its [`ConnectParams`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Message};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use crate::{ConnectParams, Error, ServerError, PG_EPOCH_OFFSET_US};

/// The largest message accepted from the server; a bigger one ends the connection.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Bytes of COPY data sent per CopyData message.
const COPY_CHUNK: usize = 256 << 10;
/// Tag of CopyBothResponse, which `postgres-protocol` does not parse.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// One result row: every column as text, `None` for SQL NULL.
pub type Row = Vec<Option<String>>;

/// What a statement returned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryResult {
    pub rows: Vec<Row>,
    /// Rows inserted, updated, deleted, copied or selected (from the command tag).
    pub affected: u64,
}

/// A message of a replication stream (inside CopyData, after `START_REPLICATION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one output-plugin message.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        data: Bytes,
    },
    /// The server's heartbeat; `reply` asks for a status update now.
    Keepalive { wal_end: u64, reply: bool },
}

/// What the backend sent, including the frame `postgres-protocol` does not know.
enum Backend {
    Message(Message),
    CopyBothResponse,
}

/// One connection to a PostgreSQL server.
pub struct Client {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
    timeout: Duration,
}

impl Client {
    /// Connects, authenticates (trust, password, md5 or SCRAM-SHA-256) and waits until the
    /// server is ready for queries.
    pub fn connect(params: &ConnectParams) -> Result<Client, Error> {
        let address = params.address();
        let connect_error = |source: io::Error| Error::Connect {
            address: address.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = match params.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, params.port)],
            Err(_) => (params.host.as_str(), params.port)
                .to_socket_addrs()
                .map_err(connect_error)?
                .collect(),
        };
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            "the host name resolves to no address",
        );
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, params.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| connect_error(last))?;
        stream
            .set_read_timeout(Some(params.timeout))
            .map_err(connect_error)?;
        stream
            .set_write_timeout(Some(params.timeout))
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            stream,
            read: BytesMut::with_capacity(64 << 10),
            write: BytesMut::with_capacity(64 << 10),
            timeout: params.timeout,
        };
        client.startup(params)?;
        Ok(client)
    }

    fn startup(&mut self, params: &ConnectParams) -> Result<(), Error> {
        let mut startup = vec![
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("client_encoding", "UTF8"),
            ("application_name", "wasm-connect"),
        ];
        if params.replication {
            startup.push(("replication", "database"));
        }
        frontend::startup_message(startup, &mut self.write).map_err(Error::encode)?;
        self.send()?;
        let password = || params.password.as_deref().ok_or(Error::PasswordRequired);
        loop {
            match self.recv()? {
                Backend::Message(Message::AuthenticationOk) => break,
                Backend::Message(Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?.as_bytes(), &mut self.write)
                        .map_err(Error::encode)?;
                    self.send()?;
                }
                Backend::Message(Message::AuthenticationMd5Password(body)) => {
                    let hash =
                        md5_hash(params.user.as_bytes(), password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(Error::encode)?;
                    self.send()?;
                }
                Backend::Message(Message::AuthenticationSasl(body)) => {
                    let mechanisms: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_string()))
                        .collect()
                        .map_err(|e| Error::Protocol(format!("bad SASL mechanism list: {e}")))?;
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(Error::UnsupportedAuth(format!(
                            "SASL {}",
                            mechanisms.join(", ")
                        )));
                    }
                    self.scram(password()?)?;
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(Error::Server(ServerError::from_fields(body.fields())));
                }
                Backend::Message(
                    Message::AuthenticationGss | Message::AuthenticationGssContinue(_),
                ) => {
                    return Err(Error::UnsupportedAuth("GSSAPI".into()));
                }
                Backend::Message(Message::AuthenticationSspi) => {
                    return Err(Error::UnsupportedAuth("SSPI".into()))
                }
                Backend::Message(Message::AuthenticationKerberosV5) => {
                    return Err(Error::UnsupportedAuth("Kerberos V5".into()))
                }
                _ => {
                    return Err(Error::Protocol(
                        "unexpected message during authentication".into(),
                    ))
                }
            }
        }
        self.until_ready().map(|_| ())
    }

    fn scram(&mut self, password: &str) -> Result<(), Error> {
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write)
            .map_err(Error::encode)?;
        self.send()?;
        match self.recv()? {
            Backend::Message(Message::AuthenticationSaslContinue(body)) => {
                scram
                    .update(body.data())
                    .map_err(|e| Error::Protocol(format!("SCRAM: {e}")))?;
            }
            Backend::Message(Message::ErrorResponse(body)) => {
                return Err(Error::Server(ServerError::from_fields(body.fields())))
            }
            _ => return Err(Error::Protocol("expected SASLContinue during SCRAM".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.write).map_err(Error::encode)?;
        self.send()?;
        match self.recv()? {
            Backend::Message(Message::AuthenticationSaslFinal(body)) => scram
                .finish(body.data())
                .map_err(|e| Error::Protocol(format!("SCRAM server signature: {e}"))),
            Backend::Message(Message::ErrorResponse(body)) => {
                Err(Error::Server(ServerError::from_fields(body.fields())))
            }
            _ => Err(Error::Protocol("expected SASLFinal during SCRAM".into())),
        }
    }

    /// Runs one or more statements with the simple query protocol; returns the rows of all
    /// of them and the count of the last.
    pub fn simple_query(&mut self, sql: &str) -> Result<QueryResult, Error> {
        frontend::query(sql, &mut self.write).map_err(Error::encode)?;
        self.send()?;
        self.collect_results()
    }

    /// Runs one statement with the extended protocol, every parameter passed as text
    /// (`None` is NULL) so the server parses it as the type the statement needs.
    pub fn query(&mut self, sql: &str, params: &[Option<&str>]) -> Result<QueryResult, Error> {
        frontend::parse("", sql, std::iter::empty(), &mut self.write).map_err(Error::encode)?;
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            params.iter(),
            |param, buf| match param {
                Some(text) => {
                    buf.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            std::iter::empty(),
            &mut self.write,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => {
                Error::Protocol(format!("cannot encode a parameter: {e}"))
            }
            frontend::BindError::Serialization(e) => Error::encode(e),
        })?;
        frontend::execute("", 0, &mut self.write).map_err(Error::encode)?;
        frontend::sync(&mut self.write);
        self.send()?;
        self.collect_results()
    }

    /// Runs `COPY … FROM STDIN` and streams `data` (in the format the statement names).
    pub fn copy_in(&mut self, sql: &str, data: &[u8]) -> Result<u64, Error> {
        frontend::query(sql, &mut self.write).map_err(Error::encode)?;
        self.send()?;
        match self.recv()? {
            Backend::Message(Message::CopyInResponse(_)) => {}
            Backend::Message(Message::ErrorResponse(body)) => {
                let error = ServerError::from_fields(body.fields());
                self.until_ready()?;
                return Err(Error::Server(error));
            }
            _ => {
                return Err(Error::Protocol(format!(
                    "{sql:?} did not start a COPY FROM STDIN"
                )))
            }
        }
        for chunk in data.chunks(COPY_CHUNK) {
            frontend::CopyData::new(chunk)
                .map_err(Error::encode)?
                .write(&mut self.write);
            self.send()?;
        }
        frontend::copy_done(&mut self.write);
        self.send()?;
        Ok(self.collect_results()?.affected)
    }

    /// Sends a replication command (`START_REPLICATION …`) and waits for the server to
    /// enter CopyBoth mode; then read with [`Client::replication_message`].
    pub fn start_replication(&mut self, command: &str) -> Result<(), Error> {
        frontend::query(command, &mut self.write).map_err(Error::encode)?;
        self.send()?;
        match self.recv()? {
            Backend::CopyBothResponse => Ok(()),
            Backend::Message(Message::ErrorResponse(body)) => {
                let error = ServerError::from_fields(body.fields());
                self.until_ready()?;
                Err(Error::Server(error))
            }
            _ => Err(Error::Protocol(format!(
                "{command:?} did not start a replication stream"
            ))),
        }
    }

    /// The next replication message, or `None` when none arrives within `wait`.
    pub fn replication_message(
        &mut self,
        wait: Duration,
    ) -> Result<Option<ReplicationMessage>, Error> {
        let (tag, len) = match self.frame_within(wait)? {
            Some(frame) => frame,
            None => return Ok(None),
        };
        let mut frame = self.read.split_to(len).freeze();
        frame.advance(5);
        match tag {
            b'd' => parse_replication(frame).map(Some),
            b'E' => {
                let mut buf = BytesMut::from(&b"E"[..]);
                buf.put_u32(len as u32 - 1);
                buf.put_slice(&frame);
                match Message::parse(&mut buf) {
                    Ok(Some(Message::ErrorResponse(body))) => {
                        Err(Error::Server(ServerError::from_fields(body.fields())))
                    }
                    _ => Err(Error::Protocol(
                        "malformed error in the replication stream".into(),
                    )),
                }
            }
            b'c' => Err(Error::Protocol(
                "the server ended the replication stream".into(),
            )),
            b'N' | b'S' => self.replication_message(wait),
            tag => Err(Error::Protocol(format!(
                "unexpected message {:?} in the replication stream",
                tag as char
            ))),
        }
    }

    /// Tells the server how far WAL was received (`write`) and durably processed
    /// (`flush`): a slot never gives back WAL before its flush position.
    pub fn standby_status(&mut self, write: u64, flush: u64) -> Result<(), Error> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(write);
        body.put_u64(flush);
        body.put_u64(flush);
        body.put_i64(pg_now());
        body.put_u8(0);
        frontend::CopyData::new(&body[..])
            .map_err(Error::encode)?
            .write(&mut self.write);
        self.send()
    }

    /// Ends the session politely; errors are irrelevant at this point.
    pub fn close(mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.send();
    }

    /// Reads results until ReadyForQuery; the first server error is returned after the
    /// connection is ready again.
    fn collect_results(&mut self) -> Result<QueryResult, Error> {
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.recv()? {
                Backend::Message(Message::DataRow(row)) => result.rows.push(text_row(&row)?),
                Backend::Message(Message::CommandComplete(body)) => {
                    let tag = body
                        .tag()
                        .map_err(|e| Error::Protocol(format!("bad command tag: {e}")))?;
                    result.affected = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    error.get_or_insert(ServerError::from_fields(body.fields()));
                }
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::CopyInResponse(_)) => {
                    // A COPY FROM STDIN sent as a plain query: refuse to feed it.
                    frontend::copy_fail(
                        "this call sends no COPY data; use copy_in",
                        &mut self.write,
                    )
                    .map_err(Error::encode)?;
                    self.send()?;
                }
                Backend::Message(_) => {}
                Backend::CopyBothResponse => {
                    return Err(Error::Protocol(
                        "a query started a replication stream; use start_replication".into(),
                    ))
                }
            }
        }
        match error {
            Some(error) => Err(Error::Server(error)),
            None => Ok(result),
        }
    }

    fn until_ready(&mut self) -> Result<QueryResult, Error> {
        self.collect_results()
    }

    fn send(&mut self) -> Result<(), Error> {
        let out = self.write.split();
        self.stream.write_all(&out).map_err(|source| Error::Io {
            doing: "sending",
            source,
        })
    }

    /// The next message, skipping notices and parameter changes.
    fn recv(&mut self) -> Result<Backend, Error> {
        loop {
            let (tag, len) = self.frame_within(self.timeout)?.ok_or_else(|| Error::Io {
                doing: "waiting for the server",
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                ),
            })?;
            if tag == COPY_BOTH_RESPONSE_TAG {
                self.read.advance(len);
                return Ok(Backend::CopyBothResponse);
            }
            let message = Message::parse(&mut self.read)
                .map_err(|e| Error::Protocol(format!("malformed server message: {e}")))?
                .ok_or_else(|| Error::Protocol("incomplete server message".into()))?;
            match message {
                Message::NoticeResponse(_)
                | Message::ParameterStatus(_)
                | Message::NotificationResponse(_) => {}
                message => return Ok(Backend::Message(message)),
            }
        }
    }

    /// Reads until one whole message is buffered; returns its tag and length (tag
    /// included), or `None` if `wait` passes first.
    fn frame_within(&mut self, wait: Duration) -> Result<Option<(u8, usize)>, Error> {
        if wait != self.timeout {
            self.set_read_timeout(wait)?;
        }
        let framed = loop {
            if self.read.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if !(4..=MAX_MESSAGE_BYTES).contains(&len) {
                    break Err(Error::TooLarge(len));
                }
                if self.read.len() > len {
                    break Ok(Some((self.read[0], len + 1)));
                }
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => break Err(Error::Closed),
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    break Err(Error::Io {
                        doing: "reading",
                        source,
                    })
                }
            }
        };
        if wait != self.timeout {
            self.set_read_timeout(self.timeout)?;
        }
        framed
    }

    fn set_read_timeout(&mut self, wait: Duration) -> Result<(), Error> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|source| Error::Io {
                doing: "setting the read timeout",
                source,
            })
    }
}

fn text_row(row: &DataRowBody) -> Result<Row, Error> {
    let buf = row.buffer();
    row.ranges()
        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
        .collect()
        .map_err(|e| Error::Protocol(format!("malformed data row: {e}")))
}

fn parse_replication(mut data: Bytes) -> Result<ReplicationMessage, Error> {
    let short = || Error::Protocol("a replication message is cut short".into());
    let kind = data.try_get_u8().map_err(|_| short())?;
    match kind {
        b'w' => {
            let wal_start = data.try_get_u64().map_err(|_| short())?;
            let wal_end = data.try_get_u64().map_err(|_| short())?;
            let _sent_at = data.try_get_i64().map_err(|_| short())?;
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
            })
        }
        b'k' => {
            let wal_end = data.try_get_u64().map_err(|_| short())?;
            let _sent_at = data.try_get_i64().map_err(|_| short())?;
            let reply = data.try_get_u8().map_err(|_| short())? != 0;
            Ok(ReplicationMessage::Keepalive { wal_end, reply })
        }
        other => Err(Error::Protocol(format!(
            "unknown replication message {:?}",
            other as char
        ))),
    }
}

/// Now, in microseconds since 2000-01-01 (what status updates carry).
fn pg_now() -> i64 {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix_us - PG_EPOCH_OFFSET_US
}

impl ServerError {
    fn from_fields(mut fields: ErrorFields<'_>) -> ServerError {
        let mut error = ServerError::default();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

impl Error {
    fn encode(e: io::Error) -> Error {
        Error::Protocol(format!("cannot encode a message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_frames_are_parsed_and_short_ones_refused() {
        let mut x = BytesMut::new();
        x.put_u8(b'w');
        x.put_u64(0x16_0000_0028);
        x.put_u64(0x16_0000_0100);
        x.put_i64(0);
        x.put_slice(b"B...");
        assert_eq!(
            parse_replication(x.clone().freeze()).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: 0x16_0000_0028,
                wal_end: 0x16_0000_0100,
                data: Bytes::from_static(b"B...")
            }
        );
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(77);
        k.put_i64(0);
        k.put_u8(1);
        assert_eq!(
            parse_replication(k.clone().freeze()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: 77,
                reply: true
            }
        );
        for cut in 0..k.len() {
            assert!(parse_replication(k.clone().freeze().slice(..cut)).is_err());
        }
        assert!(parse_replication(Bytes::from_static(b"z")).is_err());
    }
}
