//! Signing in to the dashboard when `--auth-token` is set: a browser cannot send the bearer
//! header, so a `/ui` page asked for without credentials answers a small login page (a form,
//! no JavaScript). `POST /ui/login` with the right token opens a session: a random 256-bit
//! id, never the token, in a cookie (`HttpOnly; SameSite=Strict; Path=/ui`; not `Secure`,
//! as the listener speaks plain HTTP) mapped here to the session. The cookie counts for
//! `/ui` routes only, never for the JSON API or `/metrics` ([`crate::api::auth`] asks
//! [`gate`] only for `/ui` paths). Sessions end after [`IDLE`] without a request, or at
//! `POST /ui/logout`. A wrong token is answered after [`WRONG_TOKEN_DELAY`], one wrong
//! guess at a time, so guessing runs at most one try per delay.

use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::api::auth::constant_time_eq;

/// The session cookie's name.
pub const COOKIE: &str = "wasm_connect_session";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// How long a wrong token waits for its answer.
pub const WRONG_TOKEN_DELAY: Duration = Duration::from_secs(1);
/// Sessions kept at most; opening one more ends the least recently used.
const MAX_SESSIONS: usize = 64;
/// Largest login form read.
const MAX_FORM_BYTES: usize = 4096;

/// One signed-in browser.
struct Session {
    /// 64 hex digits from the OS's random source.
    id: String,
    last_seen: Instant,
}

/// The dashboard's open sessions, in memory (they end with the process).
#[derive(Default)]
pub struct Sessions {
    open: std::sync::Mutex<Vec<Session>>,
    /// Held while a wrong token waits, so wrong guesses are answered one at a time.
    guesses: tokio::sync::Mutex<()>,
}

impl Sessions {
    fn open_sessions(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        open.retain(|s| now.duration_since(s.last_seen) < IDLE);
        open
    }

    /// Opens a session; its id, or why the OS gave no random bytes.
    fn start(&self) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.open_sessions();
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = (0..open.len()).min_by_key(|i| open[*i].last_seen) {
                open.swap_remove(oldest);
            }
        }
        open.push(Session {
            id: id.clone(),
            last_seen: Instant::now(),
        });
        Ok(id)
    }

    /// Where `presented` is among the open sessions, compared with each in constant time.
    fn find(open: &[Session], presented: &str) -> Option<usize> {
        let mut found = None;
        for (i, session) in open.iter().enumerate() {
            if constant_time_eq(session.id.as_bytes(), presented.as_bytes()) {
                found = Some(i);
            }
        }
        found
    }

    /// True when `presented` is an open session; it is then kept alive for another [`IDLE`].
    fn touch(&self, presented: &str) -> bool {
        let mut open = self.open_sessions();
        match Self::find(&open, presented) {
            Some(i) => {
                open[i].last_seen = Instant::now();
                true
            }
            None => false,
        }
    }

    fn end(&self, presented: &str) {
        let mut open = self.open_sessions();
        if let Some(i) = Self::find(&open, presented) {
            open.swap_remove(i);
        }
    }
}

/// Marks a request [`gate`] let through on a session (the pages then offer to log out).
#[derive(Debug, Clone, Copy)]
pub struct SignedIn;

/// True for the paths the session cookie may open: `/ui` and below.
pub fn is_dashboard(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Answers a `/ui` request that came without the bearer token: the login and logout routes,
/// the static assets (public: the vendored scripts and styles), a page for an open session;
/// anything else gets the login page with 401.
pub async fn gate(sessions: &Sessions, token: &str, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let method = request.method().clone();
    if path == "/ui/login" && method == Method::POST {
        return sign_in(sessions, token, request).await;
    }
    if path == "/ui/login" {
        let next = request.uri().query().and_then(next_from_query);
        return login_page(StatusCode::OK, None, next);
    }
    let session = session_cookie(request.headers());
    if path == "/ui/logout" && method == Method::POST {
        if let Some(session) = &session {
            sessions.end(session);
        }
        let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0");
        return see_other("/ui/login", Some(clear));
    }
    if path.starts_with("/ui/assets/") {
        return next.run(request).await;
    }
    if session.is_some_and(|s| sessions.touch(&s)) {
        let mut request = request;
        request.extensions_mut().insert(SignedIn);
        return next.run(request).await;
    }
    let back = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string());
    let back = (method == Method::GET).then_some(back).flatten();
    login_page(
        StatusCode::UNAUTHORIZED,
        None,
        back.filter(|b| safe_next(b)),
    )
}

/// `POST /ui/login`: the right token opens a session and goes on to `next` (or the
/// overview); a wrong one waits, then shows the form again with the error and 401.
async fn sign_in(sessions: &Sessions, token: &str, request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await;
    let fields: Vec<(String, String)> = body
        .ok()
        .and_then(|b| serde_urlencoded::from_bytes(&b).ok())
        .unwrap_or_default();
    let field = |name: &str| {
        (fields.iter())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let next = field("next").filter(|n| safe_next(n));
    let presented = field("token").unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        let _one_at_a_time = sessions.guesses.lock().await;
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        let error = "wrong token: give the value of --auth-token (or WASM_CONNECT_AUTH_TOKEN)";
        return login_page(StatusCode::UNAUTHORIZED, Some(error), next);
    }
    match sessions.start() {
        Ok(id) => {
            let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/ui");
            see_other(next.as_deref().unwrap_or("/ui"), Some(cookie))
        }
        Err(e) => {
            let error = format!("cannot open a session: the OS gave no random bytes ({e})");
            login_page(StatusCode::INTERNAL_SERVER_ERROR, Some(&error), next)
        }
    }
}

/// The session id the request's cookies carry.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    (headers.get_all(header::COOKIE).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id.to_string())
}

/// Where to go after signing in, when it is a dashboard path of this host (never another
/// site: no `//host`, no backslash, visible ASCII only).
fn safe_next(next: &str) -> bool {
    let path = next.split('?').next().unwrap_or_default();
    is_dashboard(path)
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic())
        && path != "/ui/login"
}

fn next_from_query(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    let (_, next) = pairs.into_iter().find(|(key, _)| key == "next")?;
    safe_next(&next).then_some(next)
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut response =
        (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(cookie) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    next: String,
}

fn login_page(status: StatusCode, error: Option<&str>, next: Option<String>) -> Response {
    let page = LoginPage {
        error,
        next: next.unwrap_or_else(|| "/ui".into()),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the dashboard could not render its login page: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_with_a_fresh_random_id_and_ends_at_logout() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.start().expect("id"), sessions.start().expect("id"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(sessions.touch(&a) && sessions.touch(&b));
        assert!(!sessions.touch("") && !sessions.touch(&a[..63]));
        sessions.end(&a);
        assert!(!sessions.touch(&a) && sessions.touch(&b));
    }

    #[test]
    fn at_most_max_sessions_stay_open_the_least_recently_used_ends() {
        let sessions = Sessions::default();
        let first = sessions.start().expect("id");
        let second = sessions.start().expect("id");
        std::thread::sleep(Duration::from_millis(2));
        assert!(sessions.touch(&first));
        for _ in 0..MAX_SESSIONS - 1 {
            sessions.start().expect("id");
        }
        assert!(sessions.touch(&first), "recently used: kept");
        assert!(!sessions.touch(&second), "least recently used: ended");
    }

    #[test]
    fn only_dashboard_paths_are_followed_after_signing_in() {
        assert!(safe_next("/ui/connectors/a?x=1"));
        assert!(safe_next("/ui"));
        for bad in [
            "//evil.example/ui",
            "/connectors",
            "https://evil.example/ui",
            "/ui\\..",
            "/uix",
            "/ui/login",
            "/ui/a b",
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        let cookies = format!("a=1; {COOKIE}=abc; b=2");
        headers.insert(header::COOKIE, cookies.parse().expect("header"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
