//! `RUN --mount=type=ssh`: the step reaches an ssh agent given with `kiln build --ssh`.
//!
//! The step never gets the agent's own socket. For each ssh mount kiln listens on a new
//! socket in a private temp dir and relays requests to the agent, as BuildKit's read-only
//! agent does: only "list identities" and "sign" pass; adding, removing or locking keys and
//! extensions get `SSH_AGENT_FAILURE`, so a step can use the keys but not change the agent.
//! Messages are framed (4-byte length, at most [`MAX_MESSAGE`]); a malformed one closes the
//! connection. The socket is bind-mounted at the target (a mountpoint the sandbox removes
//! from the diff), so it never reaches a layer; the listener stops when the step ends.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The agent protocol's message types the step may send (draft-miller-ssh-agent).
const REQUEST_IDENTITIES: u8 = 11;
const SIGN_REQUEST: u8 = 13;
const FAILURE: u8 = 5;
/// OpenSSH's own limit on an agent message.
const MAX_MESSAGE: usize = 256 * 1024;

/// A relay to one agent for the life of one step.
pub(crate) struct AgentProxy {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    /// Dropping it wakes the accept loop (its read end sees the hang-up): connecting to the
    /// socket could not, once the sandbox has given it to a step user kiln cannot act for.
    stop: Option<OwnedFd>,
    accept: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens on a new socket that relays to the agent at `upstream`. The socket lives in
    /// a 0700 temp dir under the system temp dir: a socket path must fit in 108 bytes.
    pub fn start(upstream: &Path) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kiln-ssh-").tempdir()?;
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let (stopped, stop) = nix::unistd::pipe().map_err(io::Error::from)?;
        let upstream = upstream.to_path_buf();
        let accept = std::thread::Builder::new()
            .name("ssh-agent-relay".into())
            .spawn(move || accept_loop(&listener, &stopped, &upstream))?;
        Ok(AgentProxy {
            _dir: dir,
            socket,
            stop: Some(stop),
            accept: Some(accept),
        })
    }

    /// The socket to mount into the step.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections until `stopped` hangs up; one thread per connection (the step's ssh
/// clients are few and short-lived).
fn accept_loop(listener: &UnixListener, stopped: &OwnedFd, upstream: &Path) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        let upstream = upstream.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("ssh-agent-conn".into())
            .spawn(move || relay(conn, &upstream));
    }
}

/// Serves one client connection: each allowed request is forwarded to the agent (connected
/// on first use) and its reply relayed back; anything else is answered with a failure.
fn relay(mut client: UnixStream, upstream: &Path) {
    let mut agent: Option<UnixStream> = None;
    while let Ok(request) = read_message(&mut client) {
        let reply = if allowed(&request) {
            forward(&mut agent, upstream, &request).unwrap_or_else(|_| vec![FAILURE])
        } else {
            vec![FAILURE]
        };
        if write_message(&mut client, &reply).is_err() {
            return;
        }
    }
}

/// Whether a request only reads the agent's keys or asks for a signature.
fn allowed(request: &[u8]) -> bool {
    matches!(request.first(), Some(&REQUEST_IDENTITIES | &SIGN_REQUEST))
}

fn forward(agent: &mut Option<UnixStream>, upstream: &Path, request: &[u8]) -> io::Result<Vec<u8>> {
    if agent.is_none() {
        *agent = Some(UnixStream::connect(upstream)?);
    }
    let conn = agent.as_mut().expect("just connected");
    let reply = write_message(conn, request).and_then(|()| read_message(conn));
    if reply.is_err() {
        *agent = None; // reconnect for the next request
    }
    reply
}

/// One framed message (its body, without the length).
fn read_message(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "agent message length out of range",
        ));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn write_message(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).expect("bounded by MAX_MESSAGE");
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(body);
    w.write_all(&framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent that answers every request with `reply`, recording what it got.
    fn fake_agent(dir: &Path, reply: &'static [u8]) -> (PathBuf, std::sync::mpsc::Receiver<u8>) {
        let path = dir.join("upstream.sock");
        let l = UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                while let Ok(m) = read_message(&mut c) {
                    tx.send(m[0]).unwrap();
                    write_message(&mut c, reply).unwrap();
                }
            }
        });
        (path, rx)
    }

    #[test]
    fn only_listing_and_signing_reach_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let (upstream, seen) = fake_agent(d.path(), &[12, 0, 0, 0, 0]);
        let proxy = AgentProxy::start(&upstream).unwrap();
        let mut c = UnixStream::connect(proxy.socket()).unwrap();
        write_message(&mut c, &[REQUEST_IDENTITIES]).unwrap();
        assert_eq!(read_message(&mut c).unwrap(), [12, 0, 0, 0, 0]);
        // REMOVE_ALL_IDENTITIES (19) and ADD_IDENTITY (17): refused without reaching the agent.
        for hostile in [19u8, 17, 22, 27] {
            write_message(&mut c, &[hostile, 1, 2]).unwrap();
            assert_eq!(read_message(&mut c).unwrap(), [FAILURE], "type {hostile}");
        }
        write_message(&mut c, &[SIGN_REQUEST, 0]).unwrap();
        read_message(&mut c).unwrap();
        drop(c);
        let got: Vec<u8> = seen.try_iter().collect();
        assert_eq!(got, [REQUEST_IDENTITIES, SIGN_REQUEST]);
        // An oversized length closes the connection instead of allocating it.
        let mut c = UnixStream::connect(proxy.socket()).unwrap();
        c.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
        let socket = proxy.socket().to_path_buf();
        drop(proxy);
        assert!(!socket.exists(), "the relay socket goes with the step");
        // A relay whose socket kiln can no longer reach (the sandbox gave it to another
        // uid) still stops: the accept loop is not woken through the socket.
        let proxy = AgentProxy::start(&upstream).unwrap();
        std::fs::remove_file(proxy.socket()).unwrap();
        drop(proxy);
    }
}
