//! Optional bearer-token check shared by both listeners, and the rules a token must meet.
//! On the JSON API listener a `/ui` request without the header goes on to the dashboard's
//! sign-in ([`crate::ui::login`]): its session cookie counts there and nowhere else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::ui::login::{self, Sessions};

/// Why a `--auth-token` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("an empty token would turn authentication off: set --auth-token (or WASM_CONNECT_AUTH_TOKEN) to a secret, or unset both to serve without authentication")]
    Empty,
    #[error("the token holds a space, a control or a non-ASCII character, which an `Authorization: Bearer` header cannot carry: use visible ASCII characters only in --auth-token (or WASM_CONNECT_AUTH_TOKEN)")]
    Unsendable,
}

/// Checks a `--auth-token` value: not empty, and only characters a client can send in the
/// header (visible ASCII), so a token never silently disables or breaks authentication. The
/// error never repeats the token.
pub fn parse_token(text: &str) -> Result<String, TokenError> {
    if text.is_empty() {
        return Err(TokenError::Empty);
    }
    if text.chars().all(|c| c.is_ascii_graphic()) {
        Ok(text.to_string())
    } else {
        Err(TokenError::Unsendable)
    }
}

/// What a request may show instead of the bearer token.
struct Guard {
    token: Arc<str>,
    /// The dashboard's sessions, on the listener serving `/ui`.
    dashboard: Option<Sessions>,
}

/// Wraps `router` so every request must carry `Authorization: Bearer <token>`, except the
/// dashboard's (`/ui`) when `dashboard` is true: those may sign in and then carry the session
/// cookie instead. Without a token configured the router is returned unchanged.
pub fn require_token(router: Router, token: Option<Arc<str>>, dashboard: bool) -> Router {
    match token {
        Some(token) => {
            let guard = Arc::new(Guard {
                token,
                dashboard: dashboard.then(Sessions::default),
            });
            router.layer(axum::middleware::from_fn_with_state(guard, check))
        }
        None => router,
    }
}

async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match (presented, &guard.dashboard) {
        (Some(presented), _) if constant_time_eq(presented.as_bytes(), guard.token.as_bytes()) => {
            next.run(request).await
        }
        (_, Some(sessions)) if login::is_dashboard(request.uri().path()) => {
            login::gate(sessions, &guard.token, request, next).await
        }
        _ => {
            let body = r#"{"error_code":401,"message":"missing or wrong bearer token: send 'Authorization: Bearer <token>'"}"#;
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, parse_token, TokenError};

    #[test]
    fn a_token_is_not_empty_and_fits_in_a_header() {
        assert!(matches!(parse_token(""), Err(TokenError::Empty)));
        assert!(matches!(parse_token("a b"), Err(TokenError::Unsendable)));
        assert!(matches!(parse_token("é"), Err(TokenError::Unsendable)));
        assert_eq!(
            parse_token("s3cret-token").ok().as_deref(),
            Some("s3cret-token")
        );
    }

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
