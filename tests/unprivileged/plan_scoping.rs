//! ARG/ENV scoping and expansion in the plan: values in force before each instruction.

use std::collections::BTreeMap;

use kiln::plan::{Base, Plan, PlanOptions, Platform, StepKind, plan};

fn opts(build_args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64/v8").unwrap(),
        ..PlanOptions::default()
    }
}

fn planned(src: &str, build_args: &[(&str, &str)]) -> Plan {
    plan(src, &opts(build_args)).unwrap_or_else(|e| panic!("{}", e.render("Dockerfile", src)))
}

fn kinds(p: &Plan, stage: usize) -> Vec<StepKind> {
    p.stages[stage]
        .steps
        .iter()
        .map(|s| s.kind.clone())
        .collect()
}

fn env(k: &[(&str, &str)]) -> StepKind {
    StepKind::Env {
        vars: k
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

#[test]
fn global_args_reach_from_only_unless_redeclared() {
    let src = "ARG TAG=3.20\nFROM alpine:$TAG\nENV A=[$TAG]\nARG TAG\nENV B=[$TAG]\n";
    let p = planned(src, &[]);
    assert_eq!(p.stages[0].base, Base::Image("alpine:3.20".into()));
    assert_eq!(kinds(&p, 0)[0], env(&[("A", "[]")]));
    assert_eq!(kinds(&p, 0)[2], env(&[("B", "[3.20]")]));
    assert_eq!(
        p.global_args,
        vec![("TAG".to_string(), Some("3.20".to_string()))]
    );
}

#[test]
fn build_args_override_defaults_and_globals() {
    let src = "ARG TAG=1\nFROM a:$TAG\nARG TAG\nARG LOCAL=d\nENV X=$TAG-$LOCAL\n";
    let p = planned(src, &[("TAG", "9"), ("LOCAL", "o")]);
    assert_eq!(p.stages[0].base, Base::Image("a:9".into()));
    assert_eq!(kinds(&p, 0)[2], env(&[("X", "9-o")]));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn env_uses_old_values_for_the_whole_instruction_and_beats_arg() {
    let src = "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nARG V=argv\nENV V=envv\nENV W=$V\nARG V=again\nENV Y=$V\n";
    let p = planned(src, &[("V", "cli")]);
    let k = kinds(&p, 0);
    assert_eq!(k[1], env(&[("abc", "bye"), ("def", "hello")]));
    // ENV wins over the ARG of the same name, even with --build-arg.
    assert_eq!(k[4], env(&[("W", "envv")]));
    assert_eq!(k[6], env(&[("Y", "envv")]));
}

#[test]
fn arg_takes_effect_from_its_line() {
    let src = "FROM scratch\nUSER ${username:-some_user}\nARG username=what_user\nUSER $username\n";
    let k = kinds(&planned(src, &[]), 0);
    assert_eq!(
        k[0],
        StepKind::User {
            user: "some_user".into()
        }
    );
    assert_eq!(
        k[2],
        StepKind::User {
            user: "what_user".into()
        }
    );
}

#[test]
fn platform_args_are_automatic_in_from_and_declared_in_stages() {
    let src = "FROM --platform=$BUILDPLATFORM alpine AS b\nARG TARGETARCH\nARG TARGETVARIANT\nENV T=$TARGETARCH/$TARGETVARIANT B=[$BUILDOS]\n";
    let p = planned(src, &[]);
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(kinds(&p, 0)[2], env(&[("T", "arm64/v8"), ("B", "[]")]));
}

#[test]
fn stage_args_and_env_are_inherited_by_child_stages_only() {
    let src = "FROM scratch AS a\nARG X=1\nENV E=e\nFROM a AS b\nENV Y=$X$E\nFROM scratch AS c\nENV Z=[$X$E]\n";
    let p = planned(src, &[]);
    assert_eq!(kinds(&p, 1)[0], env(&[("Y", "1e")]));
    assert_eq!(kinds(&p, 2)[0], env(&[("Z", "[]")]));
}

#[test]
fn args_used_for_cache_keys() {
    let src = "FROM scratch\nARG A=1\nARG B=2\nENV B=env\nRUN true\nWORKDIR /$A\nUSER $B\n";
    let p = planned(src, &[("HTTP_PROXY", "http://p")]);
    let used: Vec<BTreeMap<String, String>> = p.stages[0]
        .steps
        .iter()
        .map(|s| s.args_used.clone())
        .collect();
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    // RUN uses every ARG in scope that ENV does not override; proxies are not cache keys.
    assert_eq!(used[3], one("A", "1"));
    assert_eq!(used[4], one("A", "1"));
    assert_eq!(used[5], BTreeMap::new());
    // An undeclared proxy build-arg is predefined: no "not consumed" warning; RUN gets it.
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let run = serde_json::to_value(&p.stages[0].steps[3].kind).unwrap();
    assert_eq!(
        run["proxy_env"],
        serde_json::json!([["HTTP_PROXY", "http://p"]])
    );
}

#[test]
fn heredocs_expand_unless_quoted_and_run_programs() {
    let src = "FROM scratch\nARG N=world\nCOPY <<a <<'b' /d/\nhi $N\na\nhi $N\nb\nRUN <<EOF\necho $N\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat <<X > f\nbody\nX\nSHELL [\"/bin/bash\", \"-c\"]\nRUN echo ok\n";
    let k = kinds(&planned(src, &[]), 0);
    let StepKind::Copy { sources, .. } = &k[1] else {
        panic!("{:?}", k[1])
    };
    let json = serde_json::to_value(sources).unwrap();
    assert_eq!(json[0]["content"], "hi world\n");
    assert_eq!(json[1]["content"], "hi $N\n");
    let argv = |k: &StepKind| serde_json::to_value(k).unwrap()["program"].clone();
    // A sole heredoc runs its body with the shell; the shell expands it, not the builder.
    assert_eq!(
        argv(&k[2])["argv"],
        serde_json::json!(["/bin/sh", "-c", "echo $N\n"])
    );
    assert_eq!(argv(&k[3])["kind"], "script");
    assert_eq!(
        argv(&k[4])["argv"],
        serde_json::json!(["/bin/sh", "-c", "cat <<X > f\nbody\nX"])
    );
    assert_eq!(
        argv(&k[6])["argv"],
        serde_json::json!(["/bin/bash", "-c", "echo ok"])
    );
}

#[test]
fn workdir_is_relative_to_the_previous_one() {
    let src = "FROM scratch\nWORKDIR /a\nWORKDIR b\nWORKDIR c\nENV D=dir\nWORKDIR $D\nRUN --mount=type=bind,target=m true\n";
    let k = kinds(&planned(src, &[]), 0);
    assert_eq!(
        k[2],
        StepKind::Workdir {
            path: "/a/b/c".into()
        }
    );
    assert_eq!(
        k[4],
        StepKind::Workdir {
            path: "/a/b/c/dir".into()
        }
    );
    let json = serde_json::to_value(&k[5]).unwrap();
    assert_eq!(json["mounts"][0]["target"], "/a/b/c/dir/m");
}

#[test]
fn copy_destinations_resolve_against_workdir() {
    let src = "FROM scratch\nWORKDIR /app\nCOPY a b .\nCOPY c d/\nCOPY e f\nADD g /abs\n";
    let dests: Vec<String> = kinds(&planned(src, &[]), 0)
        .iter()
        .filter_map(|k| {
            serde_json::to_value(k).unwrap()["dest"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(dests, vec!["/app/", "/app/d/", "/app/f", "/abs"]);
}
