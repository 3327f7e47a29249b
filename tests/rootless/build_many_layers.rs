//! A RUN step on top of 127 layers (Docker's limit), built as root and rootless, and the
//! sandbox on overlay and on its copy fallback: the step sees every layer's file. With the
//! layers' full store paths the overlay options of ~40 layers already pass mount(2)'s one page.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::build_support::{bases, missing, missing_for_bases, read_layout, succeeded};
use kiln::sandbox::StepOutcome;

/// Layers under the RUN step: the busybox base's one and this many COPYs.
const COPIES: usize = 126;

/// A context with files `f1`…`fN` and a Dockerfile copying each in a layer of its own, then a
/// RUN that checks every one and lists how many it saw.
fn write_context(dir: &Path) {
    let mut dockerfile = format!("FROM {}\n", bases().busybox());
    for i in 1..=COPIES {
        std::fs::write(dir.join(format!("f{i}")), format!("{i}\n")).unwrap();
        dockerfile.push_str(&format!("COPY f{i} /layers/\n"));
    }
    dockerfile.push_str(&format!(
        "RUN for i in $(seq 1 {COPIES}); do test \"$(cat /layers/f$i)\" = $i || exit 1; done \
         && echo \"saw-$(ls /layers | wc -l)-layer-files\" | tee /seen\n"
    ));
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// The build's log; checks the RUN saw all files and the image has every layer.
fn check(out: &Output, layout: &Path) {
    let log = succeeded(out);
    assert!(log.contains(&format!("saw-{COPIES}-layer-files")), "{log}");
    let image = read_layout(layout, "latest");
    assert_eq!(image.layers.len(), COPIES + 2, "base + COPYs + RUN");
    assert_eq!(
        crate::build_support::file_content(&image, "seen").as_deref(),
        Some(format!("saw-{COPIES}-layer-files\n").as_bytes())
    );
}

#[test]
fn a_run_step_on_127_layers_sees_every_layer() {
    if let Some(why) = missing_for_bases() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    write_context(&ctx);
    let layout = tmp.path().join("layout");
    let out = crate::build_support::kiln(&tmp.path().join("store"))
        .args(["build", "-t", "many", "--progress=plain"])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check(&out, &layout);
}

/// The sandbox on overlay and on its copy fallback (which `kiln build` only takes when overlay
/// fails, so it is forced here through the sandbox's own entry), rootless: a step on 127 lower
/// dirs with store-like long names sees each one's file.
#[test]
fn the_sandbox_on_overlay_and_on_its_copy_fallback_takes_127_long_named_lower_dirs() {
    if let Some(why) = missing(&["setpriv", "newuidmap"]) {
        println!("SKIPPED: {why}");
        return;
    }
    let runner = crate::sandbox_support::runner();
    let dir = runner.tempdir();
    let mut lowers = Vec::new();
    for i in (1..=COPIES).rev() {
        let lower = dir.path().join("layers").join(format!("{i:064}"));
        std::fs::create_dir_all(lower.join("layers")).unwrap();
        std::fs::write(lower.join(format!("layers/f{i}")), format!("{i}\n")).unwrap();
        lowers.push(lower);
    }
    lowers.push(crate::sandbox_support::busybox_rootfs(dir.path()));
    runner.give(dir.path());
    let script = format!(
        "for i in $(seq 1 {COPIES}); do test \"$(cat /layers/f$i)\" = $i || exit 1; done \
         && echo \"saw-$(ls /layers | wc -l)\""
    );
    for (id, force) in [("overlay", ""), ("copy", "no-overlay")] {
        let mut spec = runner.spec(id, dir.path(), &lowers[0], &script);
        spec.lower_dirs = lowers.clone();
        let out = runner
            .command(&spec, dir.path())
            .env("KILN_SANDBOX_FORCE", force)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let events = crate::sandbox_support::events(&out);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: StepOutcome = serde_json::from_slice(&out.stdout).unwrap();
        let lines = crate::sandbox_support::output_lines(&events);
        assert_eq!(outcome.exit_code, 0, "{id}: {lines:?}");
        assert_eq!(lines, [format!("saw-{COPIES}")], "{id}");
    }
}

#[test]
fn a_rootless_run_step_on_127_layers_sees_every_layer() {
    if let Some(why) = missing_for_bases().or_else(|| missing(&["setpriv", "newuidmap"])) {
        println!("SKIPPED: {why}");
        return;
    }
    let runner = crate::sandbox_support::runner();
    let tmp = runner.tempdir();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    write_context(&ctx);
    runner.give(tmp.path());
    let layout = tmp.path().join("layout");
    let out = crate::sandbox_support::kiln_as_test_user(&tmp.path().join("store"))
        .args(["build", "-t", "many", "--progress=plain"])
        .arg(format!("--output=type=oci,dest={}", layout.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("rootless isolation"), "{log}");
    check(&out, &layout);
}
