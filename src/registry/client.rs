//! One registry endpoint: transport (TLS, HTTP fallback for insecure/loopback hosts), the auth
//! dance, and retries with exponential backoff and jitter.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, Url};

use super::auth::{Challenge, Credential, Scopes, TokenCache, TokenResponse};
use super::error::{BodyError, RegistryError, error_detail, hint_for, is_transient_status};
use crate::error_chain::Causes;

/// How the client talks to registries. `Default` is the safe choice: TLS verified, HTTP only for
/// loopback, CAs from the standard `certs.d` directories.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `false` allows plain HTTP and unverified TLS for every registry (`--tls-verify=false`).
    pub tls_verify: bool,
    /// Hosts (`host[:port]`) allowed plain HTTP and unverified TLS (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Directories holding `HOST[:PORT]/*.crt` CA files.
    pub cert_dirs: Vec<PathBuf>,
    /// A directory whose `*.crt` files are trusted for every host (skopeo's `--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// Retries after the first attempt, for transient failures.
    pub retries: u32,
    /// The first backoff; each retry doubles it (plus jitter).
    pub backoff: Duration,
    /// Blobs transferred at the same time.
    pub concurrency: usize,
    /// Upload in `PATCH` chunks of this size instead of one monolithic `PUT`.
    pub chunk_size: Option<u64>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            tls_verify: true,
            insecure_registries: Vec::new(),
            cert_dirs: vec![
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
            cert_dir: None,
            retries: 5,
            backoff: Duration::from_millis(500),
            concurrency: 4,
            chunk_size: None,
        }
    }
}

/// A client for one registry host. Cheap to share by reference across concurrent transfers.
pub struct Registry {
    host: String,
    http: reqwest::Client,
    allow_http: bool,
    credential: Option<Credential>,
    base: tokio::sync::OnceCell<Url>,
    challenge: std::sync::Mutex<Option<Challenge>>,
    tokens: TokenCache,
    /// Held while a token is fetched, so parallel transfers wait for one token request
    /// instead of each asking for the same scopes.
    token_fetch: tokio::sync::Mutex<()>,
    pub(crate) config: ClientConfig,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// Whether a `host[:port]` names this machine (Docker lets those use plain HTTP).
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// A client for `host` (the API host, e.g. `registry-1.docker.io` or `127.0.0.1:5000`).
    pub fn new(
        host: &str,
        config: ClientConfig,
        credential: Option<Credential>,
    ) -> Result<Registry, RegistryError> {
        let insecure = !config.tls_verify || config.insecure_registries.iter().any(|h| h == host);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .danger_accept_invalid_certs(insecure);
        let mut cas = ca_files(&config.cert_dirs, host)?;
        if let Some(dir) = &config.cert_dir {
            cas.extend(ca_files(std::slice::from_ref(dir), "")?);
        }
        for pem in cas {
            let cert =
                reqwest::Certificate::from_pem(&pem.1).map_err(|source| RegistryError::CaFile {
                    path: pem.0.clone(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| RegistryError::Transport {
            registry: host.to_string(),
            what: "setting up the HTTP client".into(),
            message: e.to_string(),
        })?;
        Ok(Registry {
            host: host.to_string(),
            http,
            allow_http: insecure || is_loopback(host),
            credential,
            base: tokio::sync::OnceCell::new(),
            challenge: std::sync::Mutex::new(None),
            tokens: TokenCache::default(),
            token_fetch: tokio::sync::Mutex::new(()),
            config,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the credentials are accepted (`GET /v2/` with auth), for `kiln login`.
    pub async fn check_login(&self) -> Result<(), RegistryError> {
        let what = "GET /v2/ (checking credentials)";
        let resp = self
            .send(what, &Scopes::none(), true, |http, base| {
                http.get(base.join("v2/").expect("static path"))
            })
            .await?;
        match resp.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.status_error(what, resp).await),
        }
    }

    /// Contacts the registry (the `GET /v2/` probe that finds its scheme and auth challenge)
    /// unless that was done: a caller may start it early, before its first request. `Ok`
    /// when the registry answered like one.
    pub async fn reach(&self) -> Result<(), RegistryError> {
        self.base().await.map(drop)
    }

    /// The base URL (`https://host/` or, for insecure and loopback hosts that do not speak TLS,
    /// `http://host/`), found with a `GET /v2/` that also learns the auth challenge.
    pub(crate) async fn base(&self) -> Result<&Url, RegistryError> {
        self.base.get_or_try_init(|| self.probe()).await
    }

    async fn probe(&self) -> Result<Url, RegistryError> {
        let https = self.url_for("https")?;
        // A host that may fall back to HTTP gets a short TLS attempt: some plain servers never
        // answer a ClientHello, and the full connect timeout would stall every first request.
        let tls_wait = if self.allow_http { 5 } else { 30 };
        let err = match self.ping(&https, Duration::from_secs(tls_wait)).await {
            Ok(()) => return Ok(https),
            Err(e) => e,
        };
        if self.allow_http {
            let http = self.url_for("http")?;
            if self.ping(&http, Duration::from_secs(30)).await.is_ok() {
                return Ok(http);
            }
        }
        Err(self.transport_error("connecting (GET /v2/)", &err))
    }

    fn url_for(&self, scheme: &str) -> Result<Url, RegistryError> {
        Url::parse(&format!("{scheme}://{}/", self.host)).map_err(|e| RegistryError::Transport {
            registry: self.host.clone(),
            what: "building the registry URL".into(),
            message: e.to_string(),
        })
    }

    /// Ok when something answering like a registry (200 or 401) is there.
    async fn ping(&self, base: &Url, wait: Duration) -> Result<(), reqwest::Error> {
        let url = base.join("v2/").expect("static path");
        let resp = self.http.get(url).timeout(wait).send().await?;
        if resp.status().as_u16() == 401 {
            self.learn_challenge(&resp);
        }
        resp.error_for_status().map(drop).or_else(|e| {
            if e.status().is_some_and(|s| s.as_u16() == 401) {
                Ok(())
            } else {
                Err(e)
            }
        })
    }

    fn learn_challenge(&self, resp: &Response) -> bool {
        let parsed = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .next();
        let found = parsed.is_some();
        if found {
            *self.challenge.lock().unwrap_or_else(|e| e.into_inner()) = parsed;
        }
        found
    }

    pub(crate) fn transport_error(&self, what: &str, e: &reqwest::Error) -> RegistryError {
        // The chain of causes names what really failed (refused, TLS, reset, timeout); URLs in
        // it carry no credentials (those travel only in headers).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RegistryError::Transport {
            registry: self.host.clone(),
            what: what.to_string(),
            message,
        }
    }

    /// Turns an unexpected answer into an error with the status, the registry's own words and a hint.
    pub(crate) async fn status_error(&self, what: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
        RegistryError::Status {
            registry: self.host.clone(),
            what: what.to_string(),
            status,
            detail: error_detail(&body),
            hint: hint_for(status),
        }
    }

    /// Sends a request with auth. A 401 with a challenge is answered once (new token); with
    /// `retry`, connection errors, timeouts, 429 and 5xx are retried with backoff. The request is
    /// rebuilt for every attempt, so bodies must be re-creatable by `build`.
    pub(crate) async fn send(
        &self,
        what: &str,
        scopes: &Scopes,
        retry: bool,
        build: impl Fn(&reqwest::Client, &Url) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let base = self.base().await?;
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let mut req = build(&self.http, base);
            if let Some(h) = self.auth_header(scopes).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if retry && attempt < self.config.retries => {
                    tracing::debug!(registry = %self.host, what, error = %e, "retrying");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.transport_error(what, &e)),
            };
            let status = resp.status().as_u16();
            if status == 401 && !reauthed && self.learn_challenge(&resp) {
                self.tokens.forget(scopes);
                reauthed = true;
                continue;
            }
            if retry && is_transient_status(status) && attempt < self.config.retries {
                let after = retry_after(&resp);
                tracing::debug!(registry = %self.host, what, status, "retrying");
                drop(resp);
                tokio::time::sleep(self.backoff(attempt, after)).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Exponential backoff with up to 50% random jitter; `Retry-After` wins when given (capped).
    pub(crate) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let jitter_seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        if let Some(after) = retry_after {
            return after.min(Duration::from_secs(60)) + Duration::from_millis(jitter_seed % 100);
        }
        let base = self
            .config
            .backoff
            .saturating_mul(1 << attempt.min(6))
            .min(Duration::from_secs(30));
        let jitter = base.mul_f64((jitter_seed % 1000) as f64 / 2000.0);
        base + jitter
    }

    async fn auth_header(&self, scopes: &Scopes) -> Result<Option<String>, RegistryError> {
        let challenge = self
            .challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credential.as_ref().and_then(|c| c.basic_header())),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                if let Some(t) = self.tokens.get(scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let _single = self.token_fetch.lock().await;
                if let Some(t) = self.tokens.get(scopes) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let mut wanted: Vec<&str> = scopes.iter().collect();
                if wanted.is_empty() {
                    wanted.extend(scope.as_deref());
                }
                let token = self
                    .fetch_token(&realm, service.as_deref(), &wanted)
                    .await?;
                self.tokens.put(scopes.clone(), token.clone());
                Ok(Some(format!("Bearer {}", token.value)))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[&str],
    ) -> Result<super::auth::Token, RegistryError> {
        let auth_err = |message: String| RegistryError::Auth {
            registry: self.host.clone(),
            message,
        };
        let mut url = Url::parse(realm)
            .map_err(|_| auth_err(format!("the token realm {realm:?} is not a URL")))?;
        let req = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = Url::parse("http://form/").expect("static URL");
                form.query_pairs_mut()
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh)
                    .append_pair("client_id", "kiln")
                    .append_pair("service", service.unwrap_or_default())
                    .append_pair("scope", &scopes.join(" "));
                let body = form.query().unwrap_or_default().to_string();
                self.http
                    .post(url.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            cred => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                let mut req = self.http.get(url.clone());
                if let Some(h) = cred.as_ref().and_then(|c| c.basic_header()) {
                    req = req.header(AUTHORIZATION, h);
                }
                req
            }
        };
        url.set_query(None);
        let resp = req
            .send()
            .await
            .map_err(|e| auth_err(format!("token server {url}: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let hint = if status == 401 || status == 403 {
                "the credentials were rejected; check them (kiln login)"
            } else {
                hint_for(status)
            };
            return Err(auth_err(format!(
                "token server {url}: HTTP {status}; {hint}"
            )));
        }
        let body = read_capped(resp, 1 << 20)
            .await
            .map_err(|e| auth_err(format!("token server {url}: {}", Causes(&e))))?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(|t| t.into_token(Instant::now()))
            .ok_or_else(|| auth_err(format!("token server {url} answered without a token")))
    }
}

/// Reads a small response body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if out.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `(path, contents)` of every `*.crt` in `DIR/HOST/` for each cert dir.
fn ca_files(dirs: &[PathBuf], host: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, RegistryError> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join(host)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "crt") {
                let pem = std::fs::read(&path).map_err(|source| RegistryError::Io {
                    what: format!("reading CA file {}", path.display()),
                    source,
                })?;
                out.push((path, pem));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:80",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["ghcr.io", "10.0.0.1:5000", "example.com:443"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let config = ClientConfig {
            backoff: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        let r = Registry::new("127.0.0.1:1", config, None).unwrap();
        let b0 = r.backoff(0, None);
        let b3 = r.backoff(3, None);
        assert!(
            b0 >= Duration::from_millis(100) && b0 <= Duration::from_millis(150),
            "{b0:?}"
        );
        assert!(
            b3 >= Duration::from_millis(800) && b3 <= Duration::from_millis(1200),
            "{b3:?}"
        );
        let ra = r.backoff(0, Some(Duration::from_secs(2)));
        assert!(ra >= Duration::from_secs(2) && ra < Duration::from_millis(2100));
    }
}
