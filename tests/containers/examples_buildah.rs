//! The reference run: buildah (the peer kiln is compared with) builds every project in
//! `testdata/examples/` from the test base images in a loopback registry; podman runs each image
//! and it prints the example's `expected-output`.
//!
//! The images are `crate::build_support::buildah_reference`'s OCI layouts under
//! `$CARGO_TARGET_TMPDIR/examples-buildah/<example>` (tag `latest`), built once and reused while
//! their inputs are unchanged; `build_examples.rs` compares kiln's configs and file trees with
//! them.
//!
//! A second test builds and runs the `shell-app` example rootless, as the unprivileged test user,
//! to prove the machine set-up (`tests/scripts/containers-config.sh`) works without root too.
//!
//! Needs root (the base images are built as root; the rootless run switches user with runuser),
//! buildah, podman, skopeo, docker-registry, jq and runc; without them it prints SKIPPED and
//! returns.

use crate::build_support::{EXAMPLES, Storage, TestUser, expected_output};

fn missing_prerequisite() -> Option<String> {
    crate::build_support::missing(&[
        "buildah",
        "podman",
        "skopeo",
        "docker-registry",
        "jq",
        "runc",
    ])
}

#[test]
fn examples_build_with_buildah_and_print_their_expected_output() {
    if let Some(skip) = missing_prerequisite() {
        return println!("{skip}");
    }
    let storage = Storage::new(None);
    let mut failures = Vec::new();
    for name in EXAMPLES {
        let layout = crate::build_support::buildah_reference(name);
        let image = format!("oci:{}:latest", layout.display());
        let got = storage.output_of(name, &image);
        let expected = expected_output(name);
        if got != expected {
            failures.push(format!("{name}: expected\n{expected}\ngot\n{got}"));
        }
        if *name == "hello" {
            check_hello_config(
                &crate::build_support::read_layout(&layout, "latest").config["config"],
            );
        }
    }
    assert!(
        failures.is_empty(),
        "examples printed the wrong thing:\n{}",
        failures.join("\n")
    );
}

/// The machine set-up works for an unprivileged user too: buildah's rootless isolation (user
/// namespace with the sub-id range, runc, slirp4netns, overlay) builds the example with RUN
/// steps and a `chown` to a non-root uid, and rootless podman runs it.
#[test]
fn shell_app_builds_and_runs_rootless() {
    if let Some(skip) = missing_prerequisite() {
        return println!("{skip}");
    }
    let bases = crate::build_support::bases();
    let storage = Storage::new(Some(TestUser::lookup()));
    let image = storage.buildah_build(bases.addr(), "shell-app", "rootless");
    let out = crate::build_support::run_ok(storage.podman().args(["run", "--rm", &image]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected_output("shell-app")
    );
}

/// The metadata steps of `hello` (its Dockerfile has no RUN) land in the config as Docker
/// defines them; kiln's config is compared with this one.
fn check_hello_config(config: &serde_json::Value) {
    assert_eq!(config["WorkingDir"], "/srv/hello", "{config}");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/usr/local/bin/hello"]),
        "{config}"
    );
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"], "hello",
        "{config}"
    );
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("no Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"GREETING=Hello from kiln!"), "{env:?}");
    assert!(env.contains(&"HELLO_EXAMPLE=1"), "{env:?}");
}
