//! Docker (BuildKit) conformance fixes of issue 15, end to end through `kiln build`: each test
//! asserts what the built image holds (tree, owners, config) or the error, as docker gives it.
//! Tests that need RUN build FROM the busybox base of the loopback registry and skip without
//! it; the others build FROM scratch and always run.

use std::path::Path;

use crate::build_support::{LayoutImage, Node, file_tree, kiln_build, read_layout, succeeded};

/// Builds `ctx` (with `extra` arguments) into an OCI layout under `tmp`, with the store at
/// `tmp/store`; returns the image and the build's stderr.
fn build(tmp: &Path, ctx: &Path, extra: &[&str]) -> (LayoutImage, String) {
    let layout = tmp.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    let dest = format!("--output=type=oci,dest={}", layout.display());
    let mut args = vec!["-t", "conform", "--progress=plain", dest.as_str()];
    args.extend_from_slice(extra);
    let stderr = succeeded(&kiln_build(&tmp.join("store"), &args, ctx));
    (read_layout(&layout, "latest"), stderr)
}

/// The stderr of a build of `ctx` that must fail.
fn build_fails(ctx: &Path, extra: &[&str]) -> String {
    let store = tempfile::tempdir().unwrap();
    let mut args = vec!["-t", "conform"];
    args.extend_from_slice(extra);
    crate::build_support::failed(&kiln_build(store.path(), &args, ctx))
}

fn node(kind: &str, mode: u32, uid: u64, gid: u64) -> Node {
    Node {
        kind: kind.into(),
        mode,
        uid,
        gid,
        content: None,
    }
}

fn text(image: &LayoutImage, path: &str) -> Option<String> {
    crate::build_support::file_content(image, path).map(|b| String::from_utf8(b).unwrap())
}

/// `(created_by, empty_layer)` of each history entry.
fn history(image: &LayoutImage) -> Vec<(String, bool)> {
    image.config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Item 1: WORKDIR creates its directory (BuildKit's mkdir file op: 0755, owned by USER,
/// in its own layer), so COPY onto it copies into it and `WORKDIR /` keeps earlier ones.
mod workdir {
    use super::*;

    #[test]
    fn workdir_creates_the_directory_copy_lands_inside_and_later_workdirs_keep_it() {
        let ctx = crate::build_support::context(&[
            (
                "Dockerfile",
                "FROM scratch\nWORKDIR /subdir\nCOPY f /subdir\nWORKDIR /foo/bar\nWORKDIR /\n",
            ),
            ("f", "content\n"),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        let tree = file_tree(&image);
        assert_eq!(
            tree.get("subdir"),
            Some(&node("dir", 0o755, 0, 0)),
            "{tree:?}"
        );
        assert_eq!(text(&image, "subdir/f").as_deref(), Some("content\n"));
        assert_eq!(tree.get("foo"), Some(&node("dir", 0o755, 0, 0)));
        assert_eq!(tree.get("foo/bar"), Some(&node("dir", 0o755, 0, 0)));
        assert_eq!(image.config["config"]["WorkingDir"], "/");
        // One layer per WORKDIR but `/`, whose history entry stays empty (BuildKit's).
        assert_eq!(image.layers.len(), 3);
        let h = history(&image);
        assert_eq!(
            h.iter().map(|(_, empty)| *empty).collect::<Vec<_>>(),
            [false, false, false, true],
            "{h:?}"
        );

        // A rebuild takes the WORKDIR layers from the cache: same image, WorkingDir included.
        let (again, _) = build(tmp.path(), ctx.path(), &[]);
        assert_eq!(again.manifest_digest, image.manifest_digest);
    }

    #[test]
    fn created_directories_belong_to_the_user_in_force() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/srv/app:/bin/sh\n";
        let ctx = crate::build_support::context(&[
            (
                "Dockerfile",
                "FROM scratch\nCOPY passwd /etc/passwd\nUSER app\nWORKDIR /srv/app\n\
                 USER 4000\nWORKDIR /srv/app/numeric/deeper\nWORKDIR /etc\n",
            ),
            ("passwd", passwd),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        let tree = file_tree(&image);
        // A name resolves through the image's /etc/passwd; every missing parent is created.
        assert_eq!(
            tree.get("srv"),
            Some(&node("dir", 0o755, 1234, 2345)),
            "{tree:?}"
        );
        assert_eq!(tree.get("srv/app"), Some(&node("dir", 0o755, 1234, 2345)));
        // A bare uid is the gid too (BuildKit's chown rule); existing parents are untouched.
        assert_eq!(
            tree.get("srv/app/numeric"),
            Some(&node("dir", 0o755, 4000, 4000))
        );
        assert_eq!(
            tree.get("srv/app/numeric/deeper"),
            Some(&node("dir", 0o755, 4000, 4000))
        );
        // An existing directory is left as it is: its WORKDIR layer is empty.
        assert_eq!(tree.get("etc"), Some(&node("dir", 0o755, 0, 0)));
        assert_eq!(image.layers.len(), 4);
    }

    #[test]
    fn a_file_in_the_way_fails_naming_the_line() {
        let ctx = crate::build_support::context(&[
            ("Dockerfile", "FROM scratch\nCOPY f /f\nWORKDIR /f/sub\n"),
            ("f", "x"),
        ]);
        let err = build_fails(ctx.path(), &[]);
        assert!(
            err.contains("Dockerfile:3")
                && err.contains("/f exists in the image and is not a directory"),
            "{err}"
        );
    }

    /// The reproduction with a RUN after it: the RUN finds the directory (it failed
    /// with ENOTDIR when COPY had made `/subdir` a file).
    #[test]
    fn run_after_workdir_and_copy_finds_the_directory() {
        let Some(bases) = crate::build_support::bases_or_skip() else {
            return;
        };
        let dockerfile = format!(
            "FROM {}\nWORKDIR /subdir\nCOPY f /subdir\nRUN test -f /subdir/f && pwd > /pwd\n",
            bases.busybox()
        );
        let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile), ("f", "x")]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        assert_eq!(text(&image, "pwd").as_deref(), Some("/subdir\n"));
    }
}

/// Item 2: the image `author` comes from MAINTAINER, else from the base image.
mod author {
    use super::*;

    #[test]
    fn maintainer_sets_the_author_and_a_child_image_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = crate::build_support::context(&[
            ("Dockerfile", "FROM scratch\nMAINTAINER kilroy\nCOPY f /f\n"),
            ("f", "x"),
        ]);
        let store = tmp.path().join("store");
        succeeded(&kiln_build(
            &store,
            &["-t", "kiln-test/authored:1"],
            base.path(),
        ));
        let (image, _) = build(tmp.path(), base.path(), &[]);
        assert_eq!(image.config["author"], "kilroy");

        // FROM an image in the store, and FROM a stage: the author is inherited.
        let child = crate::build_support::context(&[(
            "Dockerfile",
            "FROM kiln-test/authored:1 AS base\nLABEL a=b\nFROM base\nENV X=1\n",
        )]);
        let (image, _) = build(tmp.path(), child.path(), &[]);
        assert_eq!(image.config["author"], "kilroy", "{}", image.config);
    }
}

/// Item 3: ENV and LABEL keys are expanded like their values (quotes removed); ARG names are
/// taken as written (current BuildKit does not expand them either).
mod quoted_keys {
    use super::*;

    #[test]
    fn quoted_env_and_label_keys_lose_their_quotes() {
        let ctx = crate::build_support::context(&[(
            "Dockerfile",
            "FROM scratch\nENV \"BUILD_LOGLEVEL\"=\"5\" 'SINGLE'=one\nLABEL \"com.example.q\"=\"v\"\n",
        )]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        let env: Vec<&str> = image.config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"BUILD_LOGLEVEL=5"), "{env:?}");
        assert!(env.contains(&"SINGLE=one"), "{env:?}");
        assert_eq!(image.config["config"]["Labels"]["com.example.q"], "v");
    }
}

/// Item 7: `.containerignore` (buildah's and podman's name) and `<Dockerfile>.containerignore`.
mod containerignore {
    use super::*;

    fn copied(image: &LayoutImage) -> Vec<String> {
        file_tree(image)
            .into_iter()
            .filter(|(p, n)| p.starts_with("ctx/") && n.kind == "file")
            .map(|(p, _)| p["ctx/".len()..].to_string())
            .collect()
    }

    #[test]
    fn containerignore_is_read_and_preferred_to_dockerignore() {
        let ctx = crate::build_support::context(&[
            ("Containerfile", "FROM scratch\nCOPY . /ctx/\n"),
            (".containerignore", "secret.txt\n.*ignore\nContainerfile\n"),
            (".dockerignore", "kept.txt\n"),
            ("secret.txt", "s"),
            ("kept.txt", "k"),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        assert_eq!(copied(&image), ["kept.txt"]);
    }

    #[test]
    fn a_dockerfile_specific_containerignore_is_read() {
        let ctx = crate::build_support::context(&[
            ("build/app.Containerfile", "FROM scratch\nCOPY . /ctx/\n"),
            (
                "build/app.Containerfile.containerignore",
                "build\nsecret.txt\n",
            ),
            ("secret.txt", "s"),
            ("kept.txt", "k"),
        ]);
        let file = ctx.path().join("build/app.Containerfile");
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &["-f", file.to_str().unwrap()]);
        assert_eq!(copied(&image), ["kept.txt"]);
    }
}

/// Item 9: a stage can only read stages defined above it (BuildKit dispatches in file order).
mod later_stage {
    use super::*;

    #[test]
    fn copy_from_a_later_stage_is_refused_naming_the_line() {
        let ctx = crate::build_support::context(&[
            (
                "Dockerfile",
                "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY f /x\n",
            ),
            ("f", "x"),
        ]);
        let err = build_fails(ctx.path(), &["--target", "a"]);
        assert!(
            err.contains("Dockerfile:2")
                && err.contains(
                    "cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
                ),
            "{err}"
        );
        // By index, and for an unnamed stage, the same (BuildKit calls it stage-N).
        let ctx = crate::build_support::context(&[
            (
                "Dockerfile",
                "FROM scratch\nCOPY f /f\nCOPY --from=1 /x /x\nFROM scratch\nCOPY f /x\n\
                 FROM scratch\nCOPY --from=0 /f /f\n",
            ),
            ("f", "x"),
        ]);
        let err = build_fails(ctx.path(), &[]);
        assert!(
            err.contains("Dockerfile:3")
                && err.contains("cannot copy from stage \"1\", it needs to be defined before current stage \"stage-0\""),
            "{err}"
        );
    }

    #[test]
    fn a_skipped_stage_that_copies_from_a_later_one_does_not_fail_the_build() {
        let ctx = crate::build_support::context(&[
            (
                "Dockerfile",
                "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY f /x\n",
            ),
            ("f", "x"),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        assert_eq!(text(&image, "x").as_deref(), Some("x"));
    }

    #[test]
    fn run_mount_from_a_later_stage_is_refused_naming_the_line() {
        let ctx = crate::build_support::context(&[(
            "Dockerfile",
            "FROM scratch AS a\nWORKDIR /w\nRUN --mount=from=b,target=m true\nFROM scratch AS b\n",
        )]);
        let err = build_fails(ctx.path(), &["--target", "a"]);
        assert!(
            err.contains("Dockerfile:3")
                && err.contains("cannot mount from stage \"b\" to \"/w/m\", stage needs to be defined before current command"),
            "{err}"
        );
    }

    /// FROM sees only the stages above it: a later stage's name is an image reference, as in
    /// BuildKit (so the build pulls `b`, and here fails saying so).
    #[test]
    fn from_a_later_stage_name_is_an_image() {
        let p = kiln::plan::plan(
            "FROM b AS a\nFROM scratch AS b\n",
            &kiln::plan::PlanOptions {
                target: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.stages[0].base, kiln::plan::Base::Image("b".into()));
        assert_eq!(p.order, [0]);
    }
}

/// Item 10: a JSON array followed by more text is shell form (BuildKit's parser hands the
/// whole text to `json.Unmarshal`, which rejects trailing data).
mod json_with_trailing_text {
    use super::*;

    #[test]
    fn cmd_and_entrypoint_with_text_after_the_array_are_shell_form() {
        let ctx = crate::build_support::context(&[(
            "Dockerfile",
            "FROM scratch\nENTRYPOINT [\"a\"] b\nCMD [\"echo\", \"hello\"]this is invalid\n",
        )]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        assert_eq!(
            image.config["config"]["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "[\"a\"] b"])
        );
        assert_eq!(
            image.config["config"]["Cmd"],
            serde_json::json!(["/bin/sh", "-c", "[\"echo\", \"hello\"]this is invalid"])
        );
    }

    #[test]
    fn run_with_text_after_the_array_runs_through_the_shell() {
        let p = kiln::plan::plan(
            "FROM scratch\nRUN [\"echo\", \"hello\"]this is invalid\nRUN [\"echo\", \"ok\"]  \n",
            &Default::default(),
        )
        .unwrap();
        let argv = |i: usize| match &p.stages[0].steps[i].kind {
            kiln::plan::StepKind::Run {
                program: kiln::plan::RunProgram::Argv { argv },
                ..
            } => argv.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            argv(0),
            ["/bin/sh", "-c", "[\"echo\", \"hello\"]this is invalid"]
        );
        // Trailing blanks are not text: still exec form.
        assert_eq!(argv(1), ["echo", "ok"]);
    }

    #[test]
    fn shell_with_text_after_the_array_is_refused() {
        let ctx = crate::build_support::context(&[(
            "Dockerfile",
            "FROM scratch\nSHELL [\"/bin/sh\", \"-c\"] x\n",
        )]);
        let err = build_fails(ctx.path(), &[]);
        assert!(
            err.contains("Dockerfile:2")
                && err.contains("SHELL requires the arguments to be in JSON form"),
            "{err}"
        );
    }
}

/// Item 11: `USER name` gets only the /etc/group memberships as supplementary groups, as
/// under docker (moby/sys `GetExecUser`); `USER uid:gid` gets none.
mod user_groups {
    use super::*;

    #[test]
    fn user_name_gets_only_its_group_memberships() {
        let Some(bases) = crate::build_support::bases_or_skip() else {
            return;
        };
        let dockerfile = format!(
            "FROM {}\n\
             RUN echo 'svc:x:4321:4321::/home/svc:/bin/sh' >> /etc/passwd \
              && echo 'svc:x:4321:' >> /etc/group && echo 'extra:x:5555:svc' >> /etc/group \
              && mkdir -m 777 /out\n\
             USER svc\n\
             RUN grep '^Groups:' /proc/self/status > /out/named && id > /out/id\n\
             USER 4321:4321\n\
             RUN grep '^Groups:' /proc/self/status > /out/explicit\n",
            bases.busybox()
        );
        let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        let groups = |p: &str| {
            text(&image, p)
                .unwrap_or_else(|| panic!("{p} missing"))
                .trim_start_matches("Groups:")
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let id = text(&image, "out/id").unwrap();
        assert_eq!(groups("out/named"), ["5555"], "id: {id}");
        assert!(
            id.contains("groups=5555(extra)") && !id.contains("groups=4321"),
            "{id}"
        );
        assert!(groups("out/explicit").is_empty());
    }
}

/// `ENV PATH=/opt/bin:$PATH` expands with the base image's ENV, as docker does (the plan used to
/// know only the Dockerfile's own ENV, so `$PATH` was empty and RUN lost the base's PATH).
mod base_env {
    use super::*;

    #[test]
    fn env_and_run_see_the_base_images_env() {
        let Some(bases) = crate::build_support::bases_or_skip() else {
            return;
        };
        let dockerfile = format!(
            "FROM {}\n\
             ENV PATH=/opt/bin:$PATH MSG=\"${{PATH:+set}}\"\n\
             RUN echo \"$PATH $MSG\" > /out\n",
            bases.busybox()
        );
        let ctx = crate::build_support::context(&[("Dockerfile", &dockerfile)]);
        let tmp = tempfile::tempdir().unwrap();
        let (image, _) = build(tmp.path(), ctx.path(), &[]);
        let base_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        let env: Vec<&str> = image.config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            env.contains(&format!("PATH=/opt/bin:{base_path}").as_str()),
            "{env:?}"
        );
        assert!(env.contains(&"MSG=set"), "{env:?}");
        assert_eq!(
            text(&image, "out").unwrap(),
            format!("/opt/bin:{base_path} set\n")
        );
    }
}
