//! Registry authentication: `WWW-Authenticate` challenges, credentials that never print, and
//! bearer tokens cached per scope set.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Credentials for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or a personal access token used as password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Credential::Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::IdentityToken(_) => f.write_str("Credential::IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// `user:pass` as typed on the command line.
    pub fn parse_user_pass(s: &str) -> Option<Credential> {
        let (u, p) = s.trim_end_matches(['\r', '\n']).split_once(':')?;
        (!u.is_empty()).then(|| Credential::Basic {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    /// The value of an `Authorization: Basic …` header, if this is a user/password pair.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses one challenge (`Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `key="quoted, value",key2=token` → pairs; backslash escapes inside quotes.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        out.push((key, value));
    }
}

/// A set of token scopes (`repository:NAME:ACTIONS`), kept sorted so it can key the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn none() -> Scopes {
        Scopes(Vec::new())
    }
    pub fn pull(repo: &str) -> Scopes {
        Scopes(vec![format!("repository:{repo}:pull")])
    }
    /// `pull,push` on the target plus `pull` on a mount source, in one token request.
    pub fn push(repo: &str, mount_from: Option<&str>) -> Scopes {
        let mut v = vec![format!("repository:{repo}:pull,push")];
        if let Some(src) = mount_from.filter(|s| *s != repo) {
            v.push(format!("repository:{src}:pull"));
        }
        v.sort();
        Scopes(v)
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A bearer token; `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a token endpoint answers (Docker's `token` or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// Tokens default to 60 s (the spec's minimum); refresh a little early so a token never
    /// expires between check and use.
    pub fn into_token(self, now: Instant) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let life = Duration::from_secs(self.expires_in.unwrap_or(60).max(10));
        Some(Token {
            value,
            expires: now + life.mul_f64(0.9),
        })
    }
}

/// Tokens per scope set, dropped once expired.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<Scopes, Token>>,
}

impl TokenCache {
    pub fn get(&self, scopes: &Scopes) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(scopes)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }
    pub fn put(&self, scopes: Scopes, token: Token) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(scopes, token);
    }
    pub fn forget(&self, scopes: &Scopes) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(scopes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_escapes_and_rejects_unknown() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm="http://a/t\"x", service=svc"#),
            Some(Challenge::Bearer {
                realm: "http://a/t\"x".into(),
                service: Some("svc".into()),
                scope: None
            })
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::parse_user_pass("alice:s3cr3t\n").unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let t = Credential::IdentityToken("tok-123".into());
        assert!(!format!("{t:?}").contains("tok-123"));
        let tok = Token {
            value: "abc.def".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{tok:?}").contains("abc"));
        assert_eq!(Credential::parse_user_pass(":x"), None);
    }

    #[test]
    fn push_scopes_include_mount_source_once() {
        let s = Scopes::push("a/b", Some("c/d"));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            ["repository:a/b:pull,push", "repository:c/d:pull"]
        );
        assert_eq!(Scopes::push("a/b", Some("a/b")).iter().count(), 1);
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        let s = Scopes::pull("x");
        let resp: TokenResponse =
            serde_json::from_str(r#"{"access_token":"t1","expires_in":300}"#).unwrap();
        cache.put(s.clone(), resp.into_token(Instant::now()).unwrap());
        assert_eq!(cache.get(&s).as_deref(), Some("t1"));
        let old = Token {
            value: "t0".into(),
            expires: Instant::now() - Duration::from_secs(1),
        };
        cache.put(s.clone(), old);
        assert_eq!(cache.get(&s), None);
    }
}
