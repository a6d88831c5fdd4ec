//! Browser sessions for the reviewer page: a reviewer signs in once with their bearer token
//! (the login form POSTs it), and the browser then holds a session cookie instead of the token.
//!
//! The cookie carries 32 random bytes from the operating system's CSPRNG (hex); the server keeps
//! only their SHA-256 digest, with the reviewer's name and an expiry, so neither the store nor a
//! log can replay a session. The cookie is `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it) and `Path=/`; requests authenticated by it that change state
//! must also carry the [`CSRF_HEADER`] (a header that another origin cannot add without a CORS
//! preflight, which the guard never grants). Sessions live in memory: a restart signs everyone
//! out, which loses no data (decisions are in SQLite).
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "gibbon_review_session";
/// The header a cookie-authenticated state-changing request must carry (any value).
pub const CSRF_HEADER: &str = "x-gibbon-review";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most live sessions; signing in beyond it first drops expired ones, then the oldest.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    reviewer: String,
    expires: Instant,
}

/// The live sessions, by the digest of their cookie value.
#[derive(Default)]
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionStore({} sessions)", self.lock().len())
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

impl SessionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `reviewer`: returns the cookie value (never stored, never logged).
    pub fn open(&self, reviewer: &str) -> std::io::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                let oldest = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    sessions.remove(&k);
                }
            }
        }
        let session = Session { reviewer: reviewer.to_string(), expires: now + SESSION_TTL };
        sessions.insert(digest(&value), session);
        Ok(value)
    }

    /// The reviewer of a live session, from the request's `Cookie` header value.
    pub fn reviewer(&self, cookie_header: Option<&str>) -> Option<String> {
        let value = cookie_value(cookie_header?)?;
        let key = digest(value);
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.reviewer.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of the request's cookie, if any.
    pub fn close(&self, cookie_header: Option<&str>) {
        if let Some(value) = cookie_header.and_then(cookie_value) {
            self.lock().remove(&digest(value));
        }
    }
}

/// The session cookie's value in a `Cookie` header (`a=1; gibbon_review_session=...`).
fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The `Set-Cookie` value that stores session `value` in the browser.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_stored_hashed_and_closable() {
        let store = SessionStore::default();
        let a = store.open("alice").unwrap();
        let b = store.open("alice").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let header = format!("x=1; {COOKIE}={a}; y=2");
        assert_eq!(store.reviewer(Some(&header)).as_deref(), Some("alice"));
        assert_eq!(store.reviewer(Some(&format!("{COOKIE}={a}0"))), None);
        assert_eq!(store.reviewer(Some("other=1")), None);
        assert_eq!(store.reviewer(None), None);
        assert!(!format!("{store:?}").contains(&a));
        store.close(Some(&header));
        assert_eq!(store.reviewer(Some(&header)), None);
        assert_eq!(store.reviewer(Some(&format!("{COOKIE}={b}"))).as_deref(), Some("alice"));
        let cookie = set_cookie(&b);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    }
}
