//! A small blocking HTTP client over wasi:http (feature `http`), for connectors that call
//! web APIs: [`send`] one [`Request`], get the whole [`Response`] back.
//!
//! The host decides where a request may go: only to the addresses the connector's
//! `network.allow` lists (else the request fails with
//! `connect to 127.0.0.1:9 refused: not in network.allow`), over `http` or `https` (the
//! host checks certificates against the webpki roots). Every request carries a timeout
//! ([`Request::timeout`]); keep it well below the host's call timeout
//! (`limits.call.timeout.ms`, 30 s by default), which bounds it anyway.
//!
//! Outside wasm (a native build of a connector) [`send`] answers
//! [`HttpError::Unsupported`].

use std::time::Duration;

/// The request methods connectors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method named `text` (any case): `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub fn parse(text: &str) -> Option<Method> {
        match text.trim().to_ascii_uppercase().as_str() {
            "GET" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: Method,
    /// `http://host:port/path?query` or `https://…`.
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Bounds the connect, the wait for the answer's first byte and each wait between bytes.
    pub timeout: Duration,
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as text, for error messages.
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut excerpt: String = text.chars().take(200).collect();
        if text.chars().count() > 200 {
            excerpt.push('…');
        }
        excerpt
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL cannot be sent as written.
    Url(String),
    /// The host or the network refused or failed the request (refusals by `network.allow`
    /// and timeouts included); the text says why.
    Transport(String),
    /// The response was larger than [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// Not running as a component.
    Unsupported,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Url(m) => write!(f, "bad URL: {m}"),
            HttpError::Transport(m) => f.write_str(m),
            HttpError::TooLarge => {
                write!(f, "the response is larger than {MAX_RESPONSE_BYTES} bytes")
            }
            HttpError::Unsupported => f.write_str("wasi:http is only available in a component"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The largest response body [`send`] reads.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Headers written as `Name:Value` entries separated by `separator` (names lower-cased,
/// both sides trimmed, empty entries skipped), or the entry that is not `Name:Value`.
pub fn parse_headers(list: &str, separator: &str) -> Result<Vec<(String, String)>, String> {
    list.split(separator)
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| match entry.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            }
            _ => Err(entry.to_string()),
        })
        .collect()
}

/// `text` percent-encoded for a URL's query or path (everything but unreserved characters).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A URL split into what wasi:http takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    pub https: bool,
    pub authority: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
}

impl<'a> Url<'a> {
    pub fn parse(url: &'a str) -> Result<Url<'a>, HttpError> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(HttpError::Url(format!(
                "{url:?} does not start with http:// or https://"
            )));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::Url(format!(
                "{url:?} has no host (or has user info)"
            )));
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(Url {
            https,
            authority,
            path,
        })
    }
}

/// Sends `request` and reads the whole response.
#[cfg(target_arch = "wasm32")]
pub fn send(request: &Request<'_>) -> Result<Response, HttpError> {
    wasi::send(request)
}

/// Sends `request` and reads the whole response (not available outside a component).
#[cfg(not(target_arch = "wasm32"))]
pub fn send(request: &Request<'_>) -> Result<Response, HttpError> {
    Url::parse(request.url)?;
    Err(HttpError::Unsupported)
}

#[cfg(target_arch = "wasm32")]
mod wasi {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions,
        Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::{HttpError, Request, Response, Url, MAX_RESPONSE_BYTES};

    fn transport(what: &str) -> impl Fn(ErrorCode) -> HttpError + '_ {
        move |code| {
            HttpError::Transport(match code {
                ErrorCode::InternalError(Some(message)) => message,
                other => format!("{what}: {other:?}"),
            })
        }
    }

    fn refused(what: &str) -> HttpError {
        HttpError::Transport(format!("the host refused {what}"))
    }

    pub(super) fn send(request: &Request<'_>) -> Result<Response, HttpError> {
        let url = Url::parse(request.url)?;
        let headers: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
            .collect();
        let fields = Fields::from_list(&headers)
            .map_err(|e| HttpError::Url(format!("bad header: {e:?}")))?;
        let outgoing = OutgoingRequest::new(fields);
        let method = match request.method {
            super::Method::Get => WasiMethod::Get,
            super::Method::Post => WasiMethod::Post,
            super::Method::Put => WasiMethod::Put,
            super::Method::Patch => WasiMethod::Patch,
            super::Method::Delete => WasiMethod::Delete,
        };
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        outgoing
            .set_method(&method)
            .map_err(|()| refused("the method"))?;
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| refused("the scheme"))?;
        outgoing
            .set_authority(Some(url.authority))
            .map_err(|()| HttpError::Url(format!("bad host {:?}", url.authority)))?;
        outgoing
            .set_path_with_query(Some(url.path))
            .map_err(|()| HttpError::Url(format!("bad path {:?}", url.path)))?;
        let body = outgoing.body().map_err(|()| refused("the body"))?;
        let options = RequestOptions::new();
        let nanos = u64::try_from(request.timeout.as_nanos()).unwrap_or(u64::MAX);
        // A host that does not support a timeout keeps its own bound (the call timeout).
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        let pending = outgoing_handler::handle(outgoing, Some(options))
            .map_err(transport(request.method.as_str()))?;
        write_body(&body, request.body)?;
        OutgoingBody::finish(body, None).map_err(transport("finishing the request"))?;
        pending.subscribe().block();
        let incoming = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(transport(request.url)(code)),
            Some(Err(())) | None => return Err(refused("the response")),
        };
        let status = incoming.status();
        let body = incoming.consume().map_err(|()| refused("the body"))?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().map_err(|()| refused("the body stream"))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(HttpError::Transport(format!(
                            "reading the response of {}: {}",
                            request.url,
                            e.to_debug_string()
                        )))
                    }
                }
                if bytes.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
            }
        }
        Ok(Response {
            status,
            body: bytes,
        })
    }

    fn write_body(body: &OutgoingBody, mut bytes: &[u8]) -> Result<(), HttpError> {
        let failed = |e: StreamError| {
            HttpError::Transport(match e {
                StreamError::Closed => "the request body was closed early".to_string(),
                StreamError::LastOperationFailed(e) => {
                    format!("sending the request body: {}", e.to_debug_string())
                }
            })
        };
        let stream = body.write().map_err(|()| refused("the body stream"))?;
        while !bytes.is_empty() {
            let room = stream.check_write().map_err(failed)? as usize;
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            stream.write(now).map_err(failed)?;
            bytes = rest;
        }
        stream.blocking_flush().map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let url = Url::parse("https://api.example:8443/v1/items?page=2").unwrap();
        assert_eq!(
            url,
            Url {
                https: true,
                authority: "api.example:8443",
                path: "/v1/items?page=2"
            }
        );
        assert_eq!(Url::parse("http://h?x=1").unwrap().path, "?x=1");
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("http:///x").is_err());
        assert!(Url::parse("http://user@h/").is_err());
    }

    #[test]
    fn headers_parse_and_components_encode() {
        assert_eq!(
            parse_headers("X-A: 1| b:two:2 |", "|").unwrap(),
            [
                ("x-a".to_string(), "1".to_string()),
                ("b".into(), "two:2".into())
            ]
        );
        assert_eq!(parse_headers("novalue", "|").unwrap_err(), "novalue");
        assert_eq!(encode_component("a b/c~"), "a%20b%2Fc~");
    }
}
