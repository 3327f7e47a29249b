//! One registry client per registry host and credential for the whole build: the base pulls,
//! the `--cache-from`/`--cache-to` REFs and the `--push` destinations on one registry share
//! its connections, its `GET /v2/` probe and its tokens, instead of each pull and each REF
//! probing the registry again.

use std::sync::{Arc, Mutex};

use crate::reference::Reference;
use crate::registry::{Credential, Registry};

use super::Args;

/// The clients made so far in this build.
pub(super) struct Clients {
    made: Mutex<Vec<Made>>,
    rt: tokio::runtime::Handle,
}

/// A client, with the API host and credential it was made for.
struct Made {
    host: String,
    cred: Option<Credential>,
    client: Arc<Registry>,
}

impl Clients {
    /// Clients whose first contact with their registry starts on `rt` as they are made.
    pub(super) fn new(rt: tokio::runtime::Handle) -> Clients {
        Clients {
            made: Mutex::new(Vec::new()),
            rt,
        }
    }

    /// The client for `reference`'s registry with the credentials the flags and auth files
    /// give it, made on first use.
    pub(super) fn for_ref(&self, a: &Args, reference: &Reference) -> anyhow::Result<Arc<Registry>> {
        let cred = a.creds.resolve(reference)?;
        let host = reference.api_host();
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = made.iter().find(|m| m.host == host && m.cred == cred) {
            return Ok(m.client.clone());
        }
        let client = Arc::new(a.transport.client(host, cred.clone())?);
        // The probe (`GET /v2/`) goes out now, while the build reads its context: the first
        // real request finds it done. A failure here is met again, and reported, by that
        // request.
        let probing = client.clone();
        self.rt.spawn(async move {
            let _ = probing.reach().await;
        });
        made.push(Made {
            host: host.to_string(),
            cred,
            client: client.clone(),
        });
        Ok(client)
    }
}
