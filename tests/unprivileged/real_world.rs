//! Every real-world Dockerfile in the conformance folder parses, dumps and types cleanly.

use kiln::dockerfile;

fn real_world_files() -> Option<Vec<std::path::PathBuf>> {
    let dir = match crate::common::conformance_dir() {
        Ok(d) => d.join("real-world"),
        Err(reason) => {
            println!("{reason}");
            return None;
        }
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading real-world/")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            p.is_file() && !name.ends_with(".md") && !name.ends_with(".tsv")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no Dockerfiles in {}", dir.display());
    Some(files)
}

#[test]
fn every_real_world_file_parses_dumps_and_types() {
    let Some(files) = real_world_files() else {
        return;
    };
    let mut failures = Vec::new();
    for file in &files {
        let source = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let result = dockerfile::parse(&source).and_then(|ast| {
            assert!(!ast.dump().is_empty());
            dockerfile::parse_instructions(&ast)
        });
        if let Err(e) = result {
            failures.push(e.render(&file.display().to_string(), &source));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_real_world_file_plans() {
    let Some(files) = real_world_files() else {
        return;
    };
    let mut failures = Vec::new();
    let mut stages = 0;
    for file in &files {
        let source = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        match kiln::plan::plan(&source, &kiln::plan::PlanOptions::default()) {
            Ok(plan) => {
                assert!(!plan.order.is_empty());
                assert_eq!(*plan.order.last().unwrap(), plan.target);
                stages += plan.stages.len();
            }
            Err(e) => failures.push(e.render(&file.display().to_string(), &source)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed to plan:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    assert!(stages >= files.len());
}
