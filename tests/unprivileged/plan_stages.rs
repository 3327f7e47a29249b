//! Stages, the DAG, --target, skipped stages, validation errors and warnings of the plan.

use kiln::plan::{Base, CopyFrom, PlanOptions, StepKind, plan};

fn opts(target: Option<&str>) -> PlanOptions {
    PlanOptions {
        target: target.map(String::from),
        ..PlanOptions::default()
    }
}

/// A Dockerfile, the options, and the place and message its plan must fail with.
type Case = (
    &'static str,
    PlanOptions,
    Option<(usize, usize)>,
    &'static str,
);

/// (line, column, rendered message) of a failing plan.
fn failure(src: &str, o: &PlanOptions) -> (Option<(usize, usize)>, String) {
    let err = plan(src, o).expect_err(src);
    (err.span().map(|s| (s.line, s.column)), err.to_string())
}

const MULTI: &str = "FROM alpine AS base\nRUN a\nFROM base AS build\nRUN b\nFROM alpine AS tools\nRUN t\nFROM scratch AS out\nCOPY --from=build /x /x\nRUN --mount=from=tools,target=/t true\nFROM base AS test\nRUN c\n";

#[test]
fn default_target_is_the_last_stage_and_unneeded_stages_are_skipped() {
    let p = plan(MULTI, &opts(None)).unwrap();
    assert_eq!(p.target, 4);
    assert_eq!(p.order, vec![0, 4]);
    let needed: Vec<bool> = p.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, vec![true, false, false, false, true]);
    assert_eq!(p.stages[4].base, Base::Stage(0));
}

#[test]
fn target_pulls_in_its_dependencies_in_order() {
    let p = plan(MULTI, &opts(Some("OUT"))).unwrap();
    assert_eq!(p.target, 3);
    assert_eq!(p.order, vec![0, 1, 2, 3]);
    assert_eq!(p.stages[3].depends_on, vec![1, 2]);
    let StepKind::Copy { from, .. } = &p.stages[3].steps[0].kind else {
        panic!()
    };
    assert_eq!(*from, CopyFrom::Stage(1));
    assert!(!p.stages[4].needed);
}

#[test]
fn stages_by_index_images_and_scratch() {
    let src = "FROM alpine\nRUN a\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=docker.io/library/busybox:1 /bin/sh /sh\n";
    let p = plan(src, &opts(None)).unwrap();
    assert_eq!(p.stages[1].base, Base::Scratch);
    let froms: Vec<CopyFrom> = p.stages[1]
        .steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Copy { from, .. } => from.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        froms,
        vec![
            CopyFrom::Stage(0),
            CopyFrom::Image("docker.io/library/busybox:1".into())
        ]
    );
    assert_eq!(p.order, vec![0, 1]);
}

#[test]
fn validation_errors_name_their_place() {
    let none = opts(None);
    let cases: &[Case] = &[
        (
            "RUN x\n",
            none.clone(),
            Some((1, 1)),
            "the Dockerfile has no FROM: a build starts with FROM <image> (or FROM scratch)",
        ),
        (
            "ARG A\nRUN x\nFROM a\n",
            none.clone(),
            Some((2, 1)),
            "RUN before the first FROM: only ARG may come before FROM",
        ),
        (
            "FROM a AS x\nFROM b AS X\n",
            none.clone(),
            Some((2, 1)),
            "duplicate stage name \"x\": give each stage its own name",
        ),
        (
            "FROM a AS base\nFROM scratch\nCOPY --from=bsae /a /b\n",
            none.clone(),
            Some((3, 1)),
            "--from=bsae: no stage named \"bsae\" (stages: base, 1); to use an image, write a full reference such as docker.io/library/bsae:latest",
        ),
        (
            "FROM a\nRUN --mount=from=nope,target=/n true\n",
            none.clone(),
            Some((2, 1)),
            "--mount=from=nope: no stage named \"nope\" (stages: 0); to use an image, write a full reference such as docker.io/library/nope:latest",
        ),
        (
            "FROM a\nCOPY --from=3 /a /b\n",
            none.clone(),
            Some((2, 1)),
            "--from=3: stage index out of range (the Dockerfile has 1 stages)",
        ),
        (
            "FROM a AS one\n",
            opts(Some("two")),
            None,
            "target stage \"two\" could not be found (stages: one)",
        ),
        (
            "FROM a AS x\nCOPY --from=y /a /a\nFROM a AS y\nCOPY --from=x /b /b\n",
            none.clone(),
            Some((3, 1)),
            "circular dependency between stages: y -> x -> y",
        ),
        (
            "FROM a AS x\nCOPY --from=x /a /a\n",
            none.clone(),
            Some((2, 1)),
            "circular dependency between stages: x -> x",
        ),
        (
            "FROM a\nCOPY a b /dest\n",
            none.clone(),
            Some((2, 1)),
            "When using COPY with more than one source file, the destination must be a directory and end with a /",
        ),
        (
            "FROM a\nADD a b /dest\n",
            none.clone(),
            Some((2, 1)),
            "When using ADD with more than one source file, the destination must be a directory and end with a /",
        ),
        (
            "ARG IMG\nFROM $IMG\n",
            none.clone(),
            Some((2, 1)),
            "FROM expands to an empty image name (is an ARG missing a value? pass --build-arg)",
        ),
        (
            "FROM a\nRUN --network=bridge x\n",
            none.clone(),
            Some((2, 1)),
            "invalid --network value \"bridge\": use default, none or host",
        ),
        (
            "FROM a\nRUN --security=root x\n",
            none.clone(),
            Some((2, 1)),
            "invalid --security value \"root\": use sandbox or insecure",
        ),
        (
            "FROM a\nRUN --mount=type=nfs,target=/x x\n",
            none.clone(),
            Some((2, 1)),
            "invalid --mount value \"type=nfs,target=/x\": unsupported mount type \"nfs\" (use bind, cache, tmpfs, secret or ssh)",
        ),
        (
            "FROM a\nCOPY --chmod=999 a /b\n",
            none.clone(),
            Some((2, 1)),
            "invalid --chmod value \"999\": use an octal mode such as 644 or a symbolic one such as u=rwX,go=rX",
        ),
        (
            "FROM a\nADD --checksum=md5:00 https://x/y /y\n",
            none.clone(),
            Some((2, 1)),
            "invalid --checksum value \"md5:00\": use sha256:<hex> (or sha384:/sha512:)",
        ),
        (
            "FROM a\nENV X=${Y:?required}\n",
            none.clone(),
            Some((2, 1)),
            "failed to process \"${Y:?required}\": Y: required (at column 1 of the word)",
        ),
        (
            "# check=error=true\nFROM a\nCMD run\n",
            none.clone(),
            Some((3, 1)),
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (fatal because of `# check=error=true`)",
        ),
    ];
    for (src, o, place, message) in cases {
        assert_eq!(
            failure(src, o),
            (*place, message.to_string()),
            "for {src:?}"
        );
    }
}

#[test]
fn parse_errors_pass_through_with_their_place() {
    let src = "FROM a\nCOPY --nope x y\n";
    let err = plan(src, &opts(None)).unwrap_err();
    assert_eq!(
        err.render("Dockerfile", src),
        "Dockerfile:2:6: unknown flag: --nope (COPY accepts --from, --chown, --chmod, --link, --parents, --exclude)\n 2 | COPY --nope x y\n   |      ^"
    );
}

#[test]
fn unknown_stage_in_a_skipped_stage_is_only_a_warning() {
    let src = "FROM scratch AS broken\nCOPY --from=typo /a /a\nFROM scratch AS ok\n";
    let p = plan(src, &opts(None)).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].rule, "UnknownStage");
    assert!(plan(src, &opts(Some("broken"))).is_err());
}

#[test]
fn buildkit_style_warnings() {
    let src = "FROM alpine as Build\nMAINTAINER me\nENV k v\nCMD a\nCMD [\"b\"]\nENTRYPOINT run\nWORKDIR rel\nFROM --platform=$TARGETPLATFORM scratch\nENV X=$UNDEFINED\nFROM $NOPE_${A:-alpine}\n";
    let mut o = opts(None);
    o.build_args.insert("UNUSED".into(), "1".into());
    o.build_args.insert("http_proxy".into(), "p".into());
    let p = plan(src, &o).unwrap();
    let got: Vec<(&str, Option<usize>, &str)> = p
        .warnings
        .iter()
        .map(|w| (w.rule, w.span.map(|s| s.line), w.message.as_str()))
        .collect();
    let expected: Vec<(&str, Option<usize>, &str)> = vec![
        (
            "FromAsCasing",
            Some(1),
            "'as' and 'FROM' keywords' casing do not match",
        ),
        (
            "MultipleInstructionsDisallowed",
            Some(4),
            "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
        ),
        (
            "MaintainerDeprecated",
            Some(2),
            "Maintainer instruction is deprecated in favor of using label",
        ),
        (
            "LegacyKeyValueFormat",
            Some(3),
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
        ),
        (
            "JSONArgsRecommended",
            Some(4),
            "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
        ),
        (
            "JSONArgsRecommended",
            Some(6),
            "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
        ),
        (
            "WorkdirRelativePath",
            Some(7),
            "Relative workdir 'rel' can have unexpected results if the base image changes",
        ),
        (
            "RedundantTargetPlatform",
            Some(8),
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        ),
        (
            "UndefinedVar",
            Some(9),
            "Usage of undefined variable '$UNDEFINED'",
        ),
        (
            "UndefinedArgInFrom",
            Some(10),
            "FROM argument 'A' is not declared",
        ),
        (
            "UndefinedArgInFrom",
            Some(10),
            "FROM argument 'NOPE_' is not declared",
        ),
        (
            "UnusedBuildArg",
            None,
            "One or more build-args [UNUSED] were not consumed",
        ),
    ];
    assert_eq!(got, expected);
}

#[test]
fn check_directive_skips_rules() {
    let src = "# check=skip=JSONArgsRecommended,FromAsCasing\nFROM a as b\nCMD run\nMAINTAINER x\n";
    let p = plan(src, &opts(None)).unwrap();
    let rules: Vec<&str> = p.warnings.iter().map(|w| w.rule).collect();
    assert_eq!(rules, vec!["MaintainerDeprecated"]);
    let p = plan("# check=skip=all\nFROM a as b\nCMD run\n", &opts(None)).unwrap();
    assert!(p.warnings.is_empty());
}
