//! `kiln pull`, `kiln push`, `kiln login`/`logout` end to end against loopback registries, with
//! skopeo as the independent judge.

use crate::registry_support::*;
use assert_cmd::Command;

struct Env {
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }
    fn kiln(&self) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        c.env("KILN_ROOT", self.home.path().join("store"))
            .env("HOME", self.home.path())
            .env("DOCKER_CONFIG", self.home.path().join(".docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR");
        c
    }
}

#[test]
fn pull_then_push_under_several_tags_with_digest_file() {
    let reg = TestRegistry::start("plain");
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 21, &[200_000, 100_000], "amd64");
    src.tag(&image, "one");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:one", src_dir.path().display()),
        &format!("docker://{}/up/app:1", reg.addr),
    ]);
    let env = Env::new();
    let out = env
        .kiln()
        .args([
            "pull",
            "--platform",
            "linux/amd64",
            &format!("{}/up/app:1", reg.addr),
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains(&image.digest.to_string()), "{stdout}");

    let digest_file = env.home.path().join("digest");
    env.kiln()
        .args([
            "push",
            &format!("{}/up/app:1", reg.addr),
            &format!("{}/down/app:2", reg.addr),
            "--tag",
            "latest",
            "--digest-file",
            digest_file.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(&digest_file).unwrap(),
        image.digest.to_string()
    );
    for tag in ["2", "latest"] {
        let v: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/down/app:{tag}", reg.addr),
        ]))
        .unwrap();
        assert_eq!(v["Digest"], image.digest.to_string());
    }

    // Errors name the registry and the status, and exit non-zero.
    let out = env
        .kiln()
        .args(["pull", &format!("{}/up/app:missing", reg.addr)])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains(&reg.addr) && stderr.contains("HTTP 404"),
        "{stderr}"
    );
}

#[test]
fn login_checks_stores_and_logout_removes_credentials() {
    let reg = TestRegistry::start("tls");
    let env = Env::new();
    let cert_dir = reg.cert_dir().join(&reg.addr);
    let cert_dir = cert_dir.to_str().unwrap();

    let out = env
        .kiln()
        .args([
            "login",
            &reg.addr,
            "-u",
            USER,
            "--password-stdin",
            "--cert-dir",
            cert_dir,
        ])
        .write_stdin("wrong-password-xyz\n")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("HTTP 401") && !stderr.contains("wrong-password-xyz"),
        "{stderr}"
    );
    assert!(!env.home.path().join(".docker/config.json").exists());

    env.kiln()
        .args([
            "login",
            &reg.addr,
            "-u",
            USER,
            "--password-stdin",
            "--cert-dir",
            cert_dir,
        ])
        .write_stdin(format!("{PASS}\n"))
        .assert()
        .success();
    let config = std::fs::read_to_string(env.home.path().join(".docker/config.json")).unwrap();
    assert!(config.contains(&reg.addr), "{config}");

    // The stored login is used by push (skopeo puts an image there first, with the same creds).
    let src_dir = tempfile::tempdir().unwrap();
    let src = Layout::new(src_dir.path());
    let image = make_image(&src, 22, &[10_000], "amd64");
    src.tag(&image, "t");
    let creds = format!("{USER}:{PASS}");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-cert-dir",
        cert_dir,
        "--dest-creds",
        &creds,
        &format!("oci:{}:t", src_dir.path().display()),
        &format!("docker://{}/a/b:1", reg.addr),
    ]);
    env.kiln()
        .args([
            "pull",
            "--cert-dir",
            cert_dir,
            &format!("{}/a/b:1", reg.addr),
        ])
        .assert()
        .success();
    env.kiln()
        .args([
            "push",
            "--cert-dir",
            cert_dir,
            &format!("{}/a/b:1", reg.addr),
            &format!("{}/a/c:1", reg.addr),
        ])
        .assert()
        .success();

    env.kiln().args(["logout", &reg.addr]).assert().success();
    let out = env
        .kiln()
        .args([
            "pull",
            "--cert-dir",
            cert_dir,
            &format!("{}/a/c:1", reg.addr),
        ])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("kiln login"),
        "{stderr}"
    );
    env.kiln().args(["logout", &reg.addr]).assert().failure();
}
