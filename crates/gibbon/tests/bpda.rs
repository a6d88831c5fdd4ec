//! BPDA views of defended models (Athalye, Carlini & Wagner 2018): the forward pass is the
//! deployed model's, bit for bit; the input gradient goes through each defense's surrogate
//! (the identity for JPEG, bit depth and median), so a gradient attack that the plain wrapper
//! stalls (a zero gradient) finds what the defense only hid.
mod support;

use gibbon::defense::input::Defended;
use gibbon::eval::{evaluate, EvalSettings, RunInfo};
use gibbon::model::Classifier;
use gibbon::threat::{Norm, ThreatModel};
use tch::{Device, Kind, Tensor};

fn defended(spec: &str) -> Defended<Box<dyn Classifier>> {
    Defended::new(support::reference_model("std"), spec.parse().unwrap()).unwrap()
}

fn ce(y: &Tensor) -> impl Fn(&Tensor) -> Tensor + '_ {
    move |logits: &Tensor| {
        logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::None, -100, 0.0)
    }
}

#[test]
fn the_bpda_view_answers_exactly_as_the_deployed_model() {
    let data = support::mnist(16);
    let idx: Vec<usize> = (0..16).collect();
    let x = data.batch(&idx, Device::Cpu);
    for spec in ["jpeg:quality=75", "bits:depth=3", "median:size=2", "jpeg:quality=60,bits:depth=3"]
    {
        let plain = defended(spec);
        let bpda = defended(spec).with_bpda();
        assert!(bpda.is_bpda() && !plain.is_bpda());
        assert!(bpda.info().arch.as_deref().unwrap().starts_with("bpda["), "{spec}");
        assert!(bpda.chain().bpda_applies(), "{spec}");
        let want = plain.logits(&x).unwrap();
        assert!(bpda.logits(&x).unwrap().equal(&want), "{spec}: logits without autograd");
        let xg = x.detach().set_requires_grad(true);
        let with_graph = bpda.logits_padded(&xg).unwrap().detach();
        assert!(with_graph.equal(&want), "{spec}: logits on the autograd path");
        assert!(bpda.predict(&x).unwrap().equal(&plain.predict(&x).unwrap()), "{spec}");
        assert!(bpda.query_logits(&x).unwrap().equal(&plain.query_logits(&x).unwrap()));
    }
    // Noise is differentiable: its surrogate is itself and BPDA has nothing to change.
    assert!(!defended("noise:sigma=0.1").chain().bpda_applies());
}

#[test]
fn the_bpda_gradient_is_the_model_gradient_at_the_defended_input() {
    let data = support::mnist(16);
    let idx: Vec<usize> = (0..16).collect();
    let x = data.batch(&idx, Device::Cpu);
    let y = data.labels_of(&idx, Device::Cpu);
    let inner = support::reference_model("std");
    for spec in ["bits:depth=3", "jpeg:quality=75", "median:size=2"] {
        let plain = defended(spec);
        let (_, _, g_plain) = plain.loss_and_input_grad(&x, &ce(&y)).unwrap();
        assert_eq!(f64::try_from(g_plain.abs().sum(Kind::Double)).unwrap(), 0.0, "{spec}");
        let z = plain.chain().apply(&x).unwrap();
        let (l_inner, _, g_inner) = inner.loss_and_input_grad(&z, &ce(&y)).unwrap();
        let (l_bpda, _, g_bpda) =
            defended(spec).with_bpda().loss_and_input_grad(&x, &ce(&y)).unwrap();
        assert!(l_bpda.equal(&l_inner), "{spec}: loss at the defended input");
        assert!(g_bpda.equal(&g_inner), "{spec}: gradient passed straight through");
        assert!(f64::try_from(g_bpda.abs().sum(Kind::Double)).unwrap() > 0.0, "{spec}");
    }
}

#[test]
fn pgd_through_bpda_breaks_what_plain_pgd_cannot() {
    let data = support::mnist(48);
    let mut threat = ThreatModel::new(Norm::Linf, 0.15).unwrap();
    threat.budget.steps = Some(20);
    let settings = EvalSettings { n: Some(48), attacks: vec!["pgd".into()], ..Default::default() };
    let run =
        |m: &dyn Classifier| evaluate(m, &data, &threat, &settings, &RunInfo::default()).unwrap().0;
    let undefended = run(support::reference_model("std").as_ref());
    let robust_set = |r: &gibbon::eval::EvalReport| -> Vec<usize> {
        r.per_sample.iter().filter(|s| s.robust).map(|s| s.index).collect()
    };
    eprintln!(
        "undefended: PGD robust {:.3} {:?}",
        undefended.robust_accuracy,
        robust_set(&undefended)
    );
    for spec in ["bits:depth=3", "jpeg:quality=75"] {
        let plain = defended(spec);
        let bpda = defended(spec).with_bpda();
        let (p, b) = (run(&plain), run(&bpda));
        let robust = robust_set(&b);
        eprintln!(
            "{spec}: plain PGD robust {:.3}, BPDA PGD robust {:.3} {robust:?}",
            p.robust_accuracy, b.robust_accuracy
        );
        assert_eq!(p.clean_accuracy, b.clean_accuracy, "{spec}: same model, same answers");
        assert!(b.robust_accuracy + 0.3 < p.robust_accuracy, "{spec}: BPDA must break far more");
    }
}
