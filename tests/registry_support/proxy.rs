//! A fault-injecting HTTP/1.1 proxy in front of a registry. One request per connection
//! (`Connection: close` both ways) so faults hit exactly one request. Rules match on method and
//! a path substring and fire a given number of times.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (with an optional `Retry-After`) without asking the registry.
    Status(u16, Option<u64>),
    /// Forward the head and this many body bytes, then reset both connections.
    ResetAfter(usize),
    /// Forward, but flip one byte of the response body.
    Corrupt,
    /// Answer `307 Temporary Redirect` to this URL (blob storage elsewhere).
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub times: usize,
    pub fault: Fault,
}

pub struct Proxy {
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// `METHOD path -> what happened` for every request seen.
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rules = Arc::new(Mutex::new(rules));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, l, up) = (rules.clone(), log.clone(), upstream.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (r, l, up) = (r.clone(), l.clone(), up.clone());
                tokio::spawn(async move {
                    let _ = handle(conn, &up, &r, &l).await;
                });
            }
        });
        Proxy {
            addr,
            rules,
            log,
            task,
        }
    }

    /// A one-shot-per-connection HTTP server answering every GET with `body`; it records each
    /// request head so a test can check what headers reached it.
    pub async fn serve_static(body: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (h, body) = (heads.clone(), Arc::new(body));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (h, body) = (h.clone(), body.clone());
                tokio::spawn(async move {
                    if let Ok(Some((head, _))) = read_head(&mut conn).await {
                        h.lock().unwrap().push(head);
                        let msg = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(msg.as_bytes()).await;
                        let _ = conn.write_all(&body).await;
                        let _ = conn.shutdown().await;
                    }
                });
            }
        });
        (addr, heads)
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Reads up to and including the blank line ending an HTTP head; returns (head, extra bytes).
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos + 4]).to_string();
            return Ok(Some((head, buf[pos + 4..].to_vec())));
        }
        let n = s.read(&mut tmp).await?;
        // A TLS ClientHello (0x16) is not HTTP: close, as a plain HTTP server would answer it.
        if n == 0 || (buf.is_empty() && tmp[0] == 0x16) {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn close_head(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn reset(s: TcpStream) {
    // Zero linger never blocks on drop (it sends RST at once), which is exactly the fault wanted.
    #[allow(deprecated)]
    let _ = s.set_linger(Some(std::time::Duration::ZERO));
    drop(s);
}

async fn handle(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some((head, mut body)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(r.path_contains.as_str()))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    log.lock()
        .unwrap()
        .push(format!("{method} {path} -> {fault:?}"));
    let len = content_length(&head);
    if let Some(Fault::Redirect(to)) = &fault {
        let msg = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(msg.as_bytes()).await?;
        return Ok(());
    }
    if let Some(Fault::Status(code, after)) = &fault {
        // Drain the body so the client sees the answer, not a broken pipe.
        while body.len() < len {
            let mut tmp = vec![0u8; 65536];
            let n = client.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
        let retry = after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "HTTP/1.1 {code} Injected\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(msg.as_bytes()).await?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(close_head(&head).as_bytes()).await?;
    let limit = match fault {
        Some(Fault::ResetAfter(n)) => n,
        _ => usize::MAX,
    };
    let mut sent = 0usize;
    let mut pending = body;
    loop {
        let take = pending.len().min(limit - sent);
        up.write_all(&pending[..take]).await?;
        sent += take;
        if sent >= limit {
            reset(client);
            reset(up);
            return Ok(());
        }
        if sent >= len {
            break;
        }
        let mut tmp = vec![0u8; 65536];
        let n = client.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        pending = tmp[..n].to_vec();
    }
    let Some((rhead, mut rest)) = read_head(&mut up).await? else {
        return Ok(());
    };
    client.write_all(close_head(&rhead).as_bytes()).await?;
    let mut corrupt = matches!(fault, Some(Fault::Corrupt));
    loop {
        if corrupt && !rest.is_empty() {
            rest[0] ^= 0xff;
            corrupt = false;
        }
        client.write_all(&rest).await?;
        let mut tmp = vec![0u8; 65536];
        let n = up.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        rest = tmp[..n].to_vec();
    }
    client.shutdown().await?;
    Ok(())
}
