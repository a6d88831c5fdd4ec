//! Bearer tokens (compared in constant time, never logged) and the per-client rate limit.
//!
//! Reviewer tokens come with the reviewer's name (`name:token` lines, from a file or an
//! environment variable): the name recorded with a decision is the one its token belongs to.
use crate::{GibbonError, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// A secret kept only as its SHA-256 digest; `Debug` never shows it.
#[derive(Clone)]
struct Secret([u8; 32]);

impl Secret {
    fn new(token: &str) -> Secret {
        Secret(Sha256::digest(token.as_bytes()).into())
    }
    /// Constant-time comparison of digests (equal lengths, so the length of the token leaks
    /// nothing either).
    fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

/// The tokens a route accepts, each with the name of who holds it.
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<(String, Secret)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "TokenSet({names:?})")
    }
}

impl TokenSet {
    /// Parses `name:token` lines (blank lines and `#` comments skipped); `source` names where
    /// they came from, for errors (which never quote a token).
    pub fn parse(text: &str, source: &str) -> Result<TokenSet> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(GibbonError::invalid(
                    source,
                    format!("line {}: expected name:token", i + 1),
                ));
            };
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.len() < 16 {
                return Err(GibbonError::invalid(
                    source,
                    format!(
                        "line {}: a name and a token of at least 16 characters are needed",
                        i + 1
                    ),
                ));
            }
            tokens.push((name.to_string(), Secret::new(token)));
        }
        if tokens.is_empty() {
            return Err(GibbonError::invalid(source, "no tokens"));
        }
        Ok(TokenSet { tokens })
    }

    /// Who holds the bearer token of an `Authorization` header value, if it is one of ours.
    /// Every token is compared (no early exit), each in constant time.
    pub fn authorize(&self, authorization: Option<&str>) -> Option<&str> {
        self.holder(authorization?.strip_prefix("Bearer ")?)
    }

    /// Who holds `token` (as typed into the reviewer page's sign-in form), if it is one of ours.
    /// Every token is compared (no early exit), each in constant time.
    pub fn holder(&self, token: &str) -> Option<&str> {
        let candidate = token.trim();
        let mut found = None;
        for (name, secret) in &self.tokens {
            if secret.matches(candidate) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// A token bucket per client address: `per_second` sustained, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter; `per_second <= 0` disables it.
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter { per_second, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request's token from `client`'s bucket; false when it is empty.
    pub fn allow(&self, client: IpAddr) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.clear(); // bounded memory: a flood of addresses resets every bucket
        }
        let (level, last) = buckets.entry(client).or_insert((self.burst, now));
        *level =
            (*level + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_holder_and_reject_everything_else() {
        let set =
            TokenSet::parse("# reviewers\nalice:aaaaaaaaaaaaaaaa1\nbob: bbbbbbbbbbbbbbbb2\n", "t")
                .unwrap();
        assert_eq!(set.authorize(Some("Bearer aaaaaaaaaaaaaaaa1")), Some("alice"));
        assert_eq!(set.authorize(Some("Bearer bbbbbbbbbbbbbbbb2")), Some("bob"));
        assert_eq!(set.authorize(Some("Bearer aaaaaaaaaaaaaaaa")), None);
        assert_eq!(set.authorize(Some("aaaaaaaaaaaaaaaa1")), None);
        assert_eq!(set.authorize(None), None);
        assert!(!format!("{set:?}").contains("aaaa"));
        assert!(TokenSet::parse("alice:short", "t").is_err());
        assert!(TokenSet::parse("", "t").is_err());
    }

    #[test]
    fn rate_limiter_allows_the_burst_then_refuses() {
        let rl = RateLimiter::new(0.001, 3.0);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| rl.allow(ip)));
        assert!(!rl.allow(ip));
        assert!(rl.allow("127.0.0.2".parse().unwrap()));
        assert!(RateLimiter::new(0.0, 1.0).allow(ip));
    }
}
