//! Two kiln processes using one store: the same blob written at once ends as one whole copy,
//! a killed writer leaves nothing under a digest name, and prune waits for users to finish.
//!
//! The child processes are this test binary re-run on an `#[ignore]`d test with an env var.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln::Digest;
use kiln::store::{Store, StoreError};

const STORE_ENV: &str = "KILN_TEST_CHILD_STORE";
const BLOB_BYTES: usize = 32 << 20;

fn payload() -> impl Iterator<Item = Vec<u8>> {
    (0..BLOB_BYTES / 65536).map(|i| vec![(i % 253) as u8; 65536])
}

fn child(test: &str, store: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", &crate::common::test_name(module_path!(), test)])
        .args(["--ignored", "--nocapture"])
        .env(STORE_ENV, store);
    c
}

/// Child role: write the payload blob and commit it.
#[test]
#[ignore = "run by write_same_blob_from_two_processes"]
fn child_writes_blob() {
    let Some(root) = std::env::var_os(STORE_ENV) else {
        return;
    };
    let store = Store::open(root).unwrap();
    let mut w = store.begin_blob().unwrap();
    for chunk in payload() {
        w.write_all(&chunk).unwrap();
    }
    w.commit(None).unwrap();
}

/// Child role: start a blob, then sleep until killed.
#[test]
#[ignore = "run by killed_writer_leaves_no_blob"]
fn child_writes_forever() {
    let Some(root) = std::env::var_os(STORE_ENV) else {
        return;
    };
    let store = Store::open(root).unwrap();
    let mut w = store.begin_blob().unwrap();
    w.write_all(&[1u8; 1 << 20]).unwrap();
    w.flush().unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn write_same_blob_from_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            child("child_writes_blob", dir.path())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
    let mut want = kiln::digest::HashingWriter::new(std::io::sink());
    for chunk in payload() {
        want.write_all(&chunk).unwrap();
    }
    let (_, want, _) = want.finish();
    let (got, size) = Digest::of_reader(store.open_blob(&want).unwrap()).unwrap();
    assert_eq!((got, size), (want, BLOB_BYTES as u64));
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn killed_writer_leaves_no_blob_and_prune_cleans_up_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut kid = child("child_writes_forever", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = kid.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let mut seen = String::new();
    while !seen.contains("READY") {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "child exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // While the writer lives it holds a lease: prune must refuse, not delete its temp file.
    assert!(matches!(store.prune(), Err(StoreError::Busy(_))));
    kid.kill().unwrap();
    kid.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        1
    );
    let report = store.prune().unwrap();
    assert_eq!(report.temp_files, 1);
    assert_eq!(report.bytes, 1 << 20);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
