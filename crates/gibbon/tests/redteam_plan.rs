//! Tests of `gibbon::redteam::RedteamPlan`: the shipped examples parse into the plans their
//! knowledge allows, and every kind of bad threat file is an error naming the line and the key.
use gibbon::redteam::{Metric, RedteamPlan, Run};
use gibbon::threat::{Knowledge, Norm};

const GOOD: &str = r#"name = "t"
[model]
spec = "builtin:smallcnn-mnist"

[data]
spec = "idx:data/mnist"
n = 10

[attacker]
knowledge = "white-box"

[[perturbation]]
norm = "linf"
eps = [0.1, 0.3]

[[pass]]
metric = "robust_accuracy"
eps = 0.3
min = 0.8
"#;

fn parse(text: &str) -> gibbon::Result<RedteamPlan> {
    RedteamPlan::parse("t.toml", text, "t")
}

/// The error of `text`, which must be a user error naming `line` and containing `needle`.
fn error(text: &str, line: usize, needle: &str) -> String {
    let e = parse(text).expect_err("must be refused");
    let message = e.to_string();
    assert!(e.is_user_error(), "{message}");
    assert!(message.contains(&format!("t.toml line {line}")), "line {line} not in: {message}");
    assert!(message.contains(needle), "'{needle}' not in: {message}");
    message
}

#[test]
fn the_shipped_examples_parse() {
    for (file, audit) in [("mnist-adv.toml", true), ("mnist-std.toml", false)] {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(file);
        let plan = RedteamPlan::load(&path).unwrap();
        assert_eq!(plan.knowledge, Knowledge::WhiteBox);
        assert_eq!(plan.attacks, ["apgd-ce", "apgd-t", "fab-t", "square"]);
        assert_eq!(plan.audit_n.is_some(), audit, "{file}");
        assert!(plan
            .criteria
            .iter()
            .any(|c| c.metric == Metric::RobustAccuracy(Run { norm: Norm::Linf, eps: 0.2 })));
    }
}

#[test]
fn a_good_file_gives_its_runs_and_criteria() {
    let plan = parse(GOOD).unwrap();
    assert_eq!(plan.runs, [Run { norm: Norm::Linf, eps: 0.1 }, Run { norm: Norm::Linf, eps: 0.3 }]);
    assert_eq!(plan.n, Some(10));
    assert_eq!(plan.criteria.len(), 1);
    let c = &plan.criteria[0];
    assert_eq!(c.metric, Metric::RobustAccuracy(Run { norm: Norm::Linf, eps: 0.3 }));
    assert!(c.holds(0.8) && c.holds(0.95) && !c.holds(0.79));
    assert!(plan.audit_n.is_none());
}

#[test]
fn the_plan_follows_the_knowledge() {
    let scores = parse(&GOOD.replace("white-box", "score-based")).unwrap();
    assert_eq!(scores.attacks, ["square", "simba", "nes"]);
    let labels = parse(&GOOD.replace("white-box", "decision-based")).unwrap();
    assert_eq!(labels.attacks, ["hsj", "rays"]);
    let l2 =
        parse(&GOOD.replace("white-box", "decision-based").replace("\"linf\"", "\"l2\"")).unwrap();
    assert_eq!(l2.attacks, ["hsj"], "RayS is L-infinity only");
    let listed = parse(
        &GOOD
            .replace("knowledge = \"white-box\"", "knowledge = \"white-box\"\nattacks = [\"pgd\"]"),
    )
    .unwrap();
    assert_eq!(listed.attacks, ["pgd"]);
    assert!(listed.suite.is_none());
    let mut overridden = parse(GOOD).unwrap();
    overridden.override_attacks(&["apgd-ce".into()]).unwrap();
    assert_eq!(overridden.attacks, ["apgd-ce"]);
    let mut labels = labels;
    assert!(labels.override_attacks(&["pgd".into()]).unwrap_err().to_string().contains("needs"));
}

#[test]
fn unknown_keys_are_named_with_their_line_and_the_closest_known_key() {
    let m = error(&GOOD.replace("knowledge =", "knowlege ="), 10, "unknown key `knowlege`");
    assert!(m.contains("did you mean `knowledge`?"), "{m}");
    let m =
        error(&GOOD.replace("[data]\n", "[data]\nsplitt = \"test\"\n"), 6, "unknown key `splitt`");
    assert!(m.contains("did you mean `split`?"), "{m}");
    error(&format!("modle = 3\n{GOOD}"), 1, "unknown key `modle`");
}

#[test]
fn bad_values_are_named_with_their_line() {
    let no_model = GOOD.replace("[model]\nspec = \"builtin:smallcnn-mnist\"\n", "");
    let e = parse(&no_model).unwrap_err().to_string();
    assert!(e.contains("t.toml line") && e.contains("missing key `model`"), "{e}");
    error(&GOOD.replace("[0.1, 0.3]", "[0.1, -0.3]"), 14, "ε = -0.3 must be finite and >= 0");
    error(&GOOD.replace("\"linf\"", "\"l7\""), 13, "perturbation.norm");
    error(&GOOD.replace("white-box", "omniscient"), 10, "attacker.knowledge");
    error(&GOOD.replace("n = 10", "n = 0"), 7, "data.n must be at least 1");
    error(&GOOD.replace("builtin:smallcnn-mnist", "builtin:nope"), 3, "model.spec");
}

#[test]
fn an_attack_the_knowledge_does_not_allow_is_refused_at_its_line() {
    let text = GOOD.replace(
        "knowledge = \"white-box\"",
        "knowledge = \"score-based\"\nattacks = [\"square\", \"apgd-ce\"]",
    );
    error(&text, 11, "`apgd-ce` needs");
    let text = GOOD
        .replace("knowledge = \"white-box\"", "knowledge = \"white-box\"\nattacks = [\"rays\"]")
        .replace("\"linf\"", "\"l2\"");
    error(&text, 11, "does not support the l2 norm");
}

#[test]
fn a_criterion_on_a_metric_that_is_not_computed_is_refused() {
    error(
        &GOOD.replace("eps = 0.3\n", "eps = 0.2\n"),
        18,
        "robust_accuracy at linf ε = 0.2 is not computed",
    );
    error(
        &GOOD.replace("metric = \"robust_accuracy\"", "metric = \"audit_fired\""),
        17,
        "not computed without [audit]",
    );
    error(
        &GOOD.replace("metric = \"robust_accuracy\"", "metric = \"f1\""),
        17,
        "`f1` is not computed",
    );
    error(&GOOD.replace("min = 0.8\n", ""), 16, "give `min` or `max`");
    error(
        &format!("{GOOD}[detection]\ndetector = \"energy\"\n"),
        20,
        "written with double brackets, e.g. [[detection]]",
    );
    error(
        &GOOD.replace("metric = \"robust_accuracy\"", "metric = \"detection_rate\""),
        17,
        "detection_rate is not computed without [[detection]]",
    );
    let audit_labels = format!("{}[audit]\nn = 5\n", GOOD.replace("white-box", "decision-based"));
    error(&audit_labels, 9, "[audit] needs gradients");
}

#[test]
fn certification_is_planned_and_its_criteria_checked() {
    let text = format!(
        "{GOOD}[certify]\nsigma = 0.25\ndraws = 100\nn = 4\nradii = [0.0, 0.5]\n\n[[pass]]\nmetric = \"certified_accuracy\"\nradius = 0.5\nmin = 0.5\n"
    );
    let plan = parse(&text).unwrap();
    let c = plan.certify.as_ref().unwrap();
    assert_eq!((c.config.sigma, c.config.n, c.n, c.radii.clone()), (0.25, 100, 4, vec![0.0, 0.5]));
    assert_eq!(plan.criteria[1].metric, Metric::CertifiedAccuracy(0.5));
    error(&text.replace("radius = 0.5", "radius = 0.3"), 28, "radius 0.3 is not computed");
    error(&text.replace("sigma = 0.25", "sigma = -1"), 20, "certify: invalid sigma");
    let without =
        format!("{GOOD}[[pass]]\nmetric = \"certified_accuracy\"\nradius = 0\nmin = 0.5\n");
    error(&without, 21, "not computed without [certify]");
}
