//! ONBUILD: the triggers of the base image run first, in order, and are consumed (the new image
//! keeps only its own). Builds FROM the busybox stage of `build_stages.rs`.

use super::build_stages::{BASE, build, context, events, ok, read_layout};

#[test]
fn onbuild_triggers_of_the_base_run_first_and_are_consumed() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let base = format!(
        "{BASE}\nFROM base\nWORKDIR /srv\n\
         ONBUILD COPY . /app\nONBUILD RUN ls /app > app-list\n"
    );
    let ctx = context(&t.path().join("base"), &base);
    ok(&build(&root, &["-t", "kiln-test/onbase:1"], &ctx));

    let child = t.path().join("child");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(child.join("hello.txt"), "hi\n").unwrap();
    std::fs::write(
        child.join("Dockerfile"),
        "FROM kiln-test/onbase:1\nRUN test -f /srv/app-list\nONBUILD RUN echo mine\n",
    )
    .unwrap();
    let layout = t.path().join("layout");
    let out = build(
        &root,
        &[
            "--progress",
            "json",
            &format!("--output=type=oci,dest={}", layout.display()),
        ],
        &child,
    );
    ok(&out);
    let names: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "step_started")
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names[0].contains("ONBUILD COPY . /app") && names[1].contains("ONBUILD RUN ls /app"),
        "the triggers run first: {names:?}"
    );
    let img = read_layout(&layout);
    assert_eq!(img.file("app/hello.txt"), Some(&b"hi\n"[..]));
    let list = String::from_utf8(img.file("srv/app-list").unwrap().to_vec()).unwrap();
    assert!(list.contains("hello.txt"), "{list}");
    assert_eq!(
        img.config["config"]["OnBuild"],
        serde_json::json!(["RUN echo mine"]),
        "only the child's own ONBUILD remains"
    );
}
