//! `kiln build --secret`: a secret reaches `RUN --mount=type=secret` (as a file or an
//! environment variable) and never a layer, the image or the progress output; a missing
//! required one names the Dockerfile line and the flag. Builds FROM the busybox stage of
//! `build_stages.rs`.

use super::build_stages::{BASE, build, context, kiln, ok, read_layout};

const SECRET: &str = "hunter2-kiln-secret-value";

#[test]
fn secrets_reach_run_but_never_a_layer_or_the_output() {
    let t = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "{BASE}\nFROM base\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok > /tok.sum && ls -l /run/secrets/tok\n\
         RUN --mount=type=secret,id=tenv,env=TENV,required=true echo \"$TENV\" | sha256sum > /tenv.sum\n\
         RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n"
    );
    let ctx = context(t.path(), &dockerfile);
    let secret_file = t.path().join("tok.txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    let root = t.path().join("root");
    for progress in ["json", "plain"] {
        let layout = t.path().join(format!("layout-{progress}"));
        let out = kiln(&root)
            .env("TENV_SOURCE", format!("{SECRET}-env"))
            .arg("build")
            .args(["--progress", progress, "--no-cache"])
            .arg(format!("--secret=id=tok,src={}", secret_file.display()))
            .arg("--secret=id=tenv,env=TENV_SOURCE")
            .arg(format!("--output=type=oci,dest={}", layout.display()))
            .arg(&ctx)
            .output()
            .unwrap();
        ok(&out);
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains("hunter2"),
            "the secret leaked into --progress {progress} output"
        );
    }
    let img = read_layout(&t.path().join("layout-plain"));
    let sum = String::from_utf8(img.file("tok.sum").expect("/tok.sum").to_vec()).unwrap();
    let want = kiln::Digest::of(SECRET.as_bytes()).hex().to_string();
    assert_eq!(sum, format!("{want}  /run/secrets/tok\n"));
    let env_sum = String::from_utf8(img.file("tenv.sum").unwrap().to_vec()).unwrap();
    let want = kiln::Digest::of(format!("{SECRET}-env\n").as_bytes()).hex();
    assert_eq!(env_sum, format!("{want}  -\n"));
    for (i, layer) in img.layers.iter().enumerate() {
        assert!(
            !layer.keys().any(|p| p.contains("secrets")),
            "layer {i} has a secret path: {:?}",
            layer.keys().collect::<Vec<_>>()
        );
    }
    for tar in &img.tars {
        assert!(
            !tar.windows(7).any(|w| w == b"hunter2"),
            "a layer contains the secret's bytes"
        );
    }
}

#[test]
fn a_missing_required_secret_names_the_line_and_the_flag() {
    let t = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "{BASE}\nFROM base\nRUN --mount=type=secret,id=npm,required=true cat /run/secrets/npm\n"
    );
    let ctx = context(t.path(), &dockerfile);
    let out = build(&t.path().join("root"), &[], &ctx);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:6") && stderr.contains("--secret id=npm"),
        "{stderr}"
    );
}
