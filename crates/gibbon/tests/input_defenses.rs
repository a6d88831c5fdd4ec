//! Input defenses do what they say (JPEG equals the codec's round trip, bit depth leaves 2^d
//! levels, the median filter equals a direct computation), wrapped models keep gibbon's
//! guarantees (verifier, batch-size independence) and bad specs are clear errors.
mod support;

use gibbon::defense::input::{
    BitDepth, Defended, DefenseChain, InputDefense, JpegCompression, MedianSmoothing, Surrogate,
};
use gibbon::eval::{evaluate, verify_batch, EvalSettings, RunInfo};
use gibbon::model::{Arch, BuiltinModel, Classifier};
use gibbon::threat::{Norm, ThreatModel};
use gibbon::GibbonError;
use tch::{Device, Kind, Tensor};

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

/// Encodes and decodes 8-bit pixels with the codec crates directly.
fn codec_round_trip(pixels: &[u8], w: u16, h: u16, rgb: bool, quality: u8) -> Vec<u8> {
    let color = if rgb { jpeg_encoder::ColorType::Rgb } else { jpeg_encoder::ColorType::Luma };
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, quality).encode(pixels, w, h, color).unwrap();
    jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes)).decode().unwrap()
}

#[test]
fn jpeg_output_equals_the_codec_round_trip_for_gray_and_rgb_images() {
    let data = support::mnist(3);
    let x = data.batch(&[0, 1, 2], Device::Cpu);
    for quality in [10u8, 75] {
        let out = JpegCompression::new(quality).unwrap().apply(&x).unwrap();
        assert_eq!(out.size(), x.size());
        for i in 0..3 {
            let pixels: Vec<u8> =
                to_vec(&x.get(i)).iter().map(|v| (v * 255.0).round() as u8).collect();
            let expected = codec_round_trip(&pixels, 28, 28, false, quality);
            let got: Vec<u8> =
                to_vec(&out.get(i)).iter().map(|v| (v * 255.0).round() as u8).collect();
            assert_eq!(got, expected, "quality {quality}, image {i}");
        }
    }
    // Low quality really changes the image (the round trip is not the identity).
    let q10 = JpegCompression::new(10).unwrap().apply(&x).unwrap();
    assert!(f64::try_from((&q10 - &x).abs().max()).unwrap() > 0.1);

    // RGB: [3, H, W] planes are interleaved for the codec and split again.
    let rgb = gibbon::random::uniform_tensor(5, &[2, 3, 16, 24]);
    let out = JpegCompression::new(50).unwrap().apply(&rgb).unwrap();
    for i in 0..2 {
        let hwc = rgb.get(i).permute([1, 2, 0]).contiguous();
        let pixels: Vec<u8> = to_vec(&hwc).iter().map(|v| (v * 255.0).round() as u8).collect();
        let expected = codec_round_trip(&pixels, 24, 16, true, 50);
        let got_hwc = out.get(i).permute([1, 2, 0]).contiguous();
        let got: Vec<u8> = to_vec(&got_hwc).iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(got, expected, "rgb image {i}");
    }
}

#[test]
fn bit_depth_leaves_exactly_two_to_the_d_levels_nearest_the_input() {
    let x = Tensor::linspace(0.0, 1.0, 10_001, (Kind::Float, Device::Cpu)).view([1, 1, 1, 10_001]);
    for depth in 1..=8u32 {
        let out = BitDepth::new(depth).unwrap().apply(&x).unwrap();
        let mut levels: Vec<u32> = to_vec(&out).iter().map(|v| v.to_bits()).collect();
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(levels.len(), 1 << depth, "depth {depth}");
        let top = f64::from((1u32 << depth) - 1);
        let err = f64::try_from((&out - &x).abs().max()).unwrap();
        assert!(err <= 0.5 / top + 1e-6, "depth {depth}: error {err}");
    }
}

/// The median of the K×K window by padding the plane with scipy's `reflect` mode first.
fn median_by_padding(plane: &[f32], h: usize, w: usize, k: usize) -> Vec<f32> {
    let lo = k / 2;
    let pad = |i: isize, n: usize| -> usize {
        // d c b a | a b c d | d c b a, one reflection suffices for k/2 <= n.
        if i < 0 {
            (-i - 1) as usize
        } else if i as usize >= n {
            2 * n - 1 - i as usize
        } else {
            i as usize
        }
    };
    let (ph, pw) = (h + k - 1, w + k - 1);
    let mut padded = vec![0f32; ph * pw];
    for r in 0..ph {
        for c in 0..pw {
            let (sr, sc) = (pad(r as isize - lo as isize, h), pad(c as isize - lo as isize, w));
            padded[r * pw + c] = plane[sr * w + sc];
        }
    }
    let mut out = Vec::new();
    for r in 0..h {
        for c in 0..w {
            let mut win: Vec<f32> = (0..k)
                .flat_map(|dr| (0..k).map(move |dc| (dr, dc)))
                .map(|(dr, dc)| padded[(r + dr) * pw + c + dc])
                .collect();
            win.sort_by(f32::total_cmp);
            out.push(win[win.len() / 2]);
        }
    }
    out
}

#[test]
fn median_matches_a_hand_computed_fixture_and_a_direct_computation() {
    // 3×3 fixture, size 3, reflected borders: the top-left window is {1,1,2, 1,1,2, 4,4,5}
    // → 2; the top-right one {2,3,3, 2,3,3, 5,6,6} → 3; the centre's is the whole plane → 5.
    let plane = [1f32, 2., 3., 4., 5., 6., 7., 8., 9.];
    let x = Tensor::from_slice(&plane).view([1, 1, 3, 3]);
    let out = to_vec(&MedianSmoothing::new(3).unwrap().apply(&x).unwrap());
    assert_eq!(out, vec![2., 3., 3., 4., 5., 6., 7., 7., 8.]);

    let x = gibbon::random::uniform_tensor(11, &[2, 3, 7, 9]);
    for k in [1usize, 2, 3, 4, 5] {
        let out = MedianSmoothing::new(k).unwrap().apply(&x).unwrap();
        let values = to_vec(&x);
        let got = to_vec(&out);
        for (p, (src, dst)) in values.chunks(63).zip(got.chunks(63)).enumerate() {
            assert_eq!(dst, median_by_padding(src, 7, 9, k).as_slice(), "k {k}, plane {p}");
        }
    }
}

#[test]
fn chains_parse_print_and_declare_their_properties() {
    let chain: DefenseChain = " jpeg:quality=75 , bits:depth=3,median:size=2".parse().unwrap();
    assert_eq!(chain.to_string(), "jpeg:quality=75,bits:depth=3,median:size=2");
    assert!(chain.deterministic() && !chain.differentiable());
    assert!(chain.describe().iter().all(|d| d.bpda_surrogate == Surrogate::Identity));
    let noise: DefenseChain = "noise:sigma=0.25".parse().unwrap();
    let d = &noise.describe()[0];
    assert!(!d.deterministic && d.differentiable && d.bpda_surrogate == Surrogate::Itself);
    // Two passes over the same input draw different noise of about the right size.
    let x = Tensor::full([4, 1, 28, 28], 0.5, (Kind::Float, Device::Cpu));
    let a = noise.apply(&x).unwrap();
    let b = noise.apply(&x).unwrap();
    assert!(f64::try_from((&a - &b).abs().max()).unwrap() > 0.1);
    let std = f64::try_from((&a - &x).std(true)).unwrap();
    assert!((std - 0.25).abs() < 0.02, "noise std {std}");
}

fn invalid_message(text: &str) -> String {
    match text.parse::<DefenseChain>() {
        Err(e @ GibbonError::InvalidArgument { .. }) => e.to_string(),
        Err(other) => panic!("{text}: not an invalid-argument error: {other}"),
        Ok(c) => panic!("{text}: parsed as {c}"),
    }
}

#[test]
fn bad_specs_name_the_defense_and_the_parameter() {
    assert!(invalid_message("blur:size=3").contains("unknown input defense 'blur'"));
    for (spec, needle) in [
        ("jpeg:quality=0", "jpeg' parameter quality"),
        ("jpeg:quality=101", "jpeg' parameter quality"),
        ("bits:depth=0", "bits' parameter depth"),
        ("bits:depth=9", "bits' parameter depth"),
        ("noise:sigma=-0.1", "noise' parameter sigma"),
        ("median:size=0", "median' parameter size"),
        ("bits", "missing"),
        ("jpeg:quality=75;strength=2", "parameter strength"),
        ("jpeg:quality=high", "not a finite number"),
        ("jpeg:quality=75,,bits:depth=3", "empty item"),
    ] {
        let m = invalid_message(spec);
        assert!(m.contains(needle), "{spec}: {m}");
    }
    // JPEG and the median filter need images: a flat 10-value input is refused by name.
    let flat = BuiltinModel::new(Arch::Linear, &[10], 2, Device::Cpu).unwrap();
    let err = Defended::new(flat, "jpeg:quality=75".parse().unwrap()).err().unwrap();
    assert!(err.is_user_error() && err.to_string().contains("defense 'jpeg'"), "{err}");
    let four = BuiltinModel::new(Arch::Linear, &[4, 8, 8], 2, Device::Cpu).unwrap();
    assert!(Defended::new(four, "jpeg:quality=75".parse().unwrap()).is_err());
}

fn std_model() -> Box<dyn Classifier> {
    support::reference_model("std")
}

#[test]
fn host_defenses_give_a_zero_input_gradient_and_the_model_behind_them_does_not() {
    let data = support::mnist(8);
    let idx: Vec<usize> = (0..8).collect();
    let x = data.batch(&idx, Device::Cpu);
    let y = data.labels_of(&idx, Device::Cpu);
    let ce = |logits: &Tensor| {
        logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0)
    };
    let (_, _, g) = std_model().loss_and_input_grad(&x, &ce).unwrap();
    assert!(f64::try_from(g.abs().sum(Kind::Float)).unwrap() > 0.0);
    for spec in ["jpeg:quality=75", "median:size=2", "bits:depth=3"] {
        let m = Defended::new(std_model(), spec.parse().unwrap()).unwrap();
        let (loss, _, g) = m.loss_and_input_grad(&x, &ce).unwrap();
        assert_eq!(f64::try_from(g.abs().sum(Kind::Float)).unwrap(), 0.0, "{spec}");
        assert!(f64::try_from(loss.sum(Kind::Float)).unwrap().is_finite());
    }
}

#[test]
fn wrapped_models_record_their_chain_and_keep_batch_size_independence() {
    let data = support::mnist(40);
    let mut threat = ThreatModel::new(Norm::Linf, 0.2).unwrap();
    threat.budget.steps = Some(5);
    threat.defense = Some("jpeg:quality=60,median:size=2".into());
    let model =
        Defended::new(std_model(), "jpeg:quality=60,median:size=2".parse().unwrap()).unwrap();
    assert!(model
        .info()
        .arch
        .as_deref()
        .unwrap()
        .contains("defended[jpeg:quality=60,median:size=2]"));
    let run = |batch_size: usize| {
        let s = EvalSettings { batch_size, attacks: vec!["pgd".into()], ..Default::default() };
        evaluate(&model, &data, &threat, &s, &RunInfo::default()).unwrap().0
    };
    let (a, b) = (run(7), run(32));
    assert_eq!(a.per_sample, b.per_sample);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["threat"]["defense"], "jpeg:quality=60,median:size=2");
}

#[test]
fn the_verifier_refuses_and_judges_wrapped_models_through_the_wrapper() {
    let data = support::mnist(32);
    let idx: Vec<usize> = (0..32).collect();
    let x = data.batch(&idx, Device::Cpu);
    let y = data.labels_of(&idx, Device::Cpu);
    let threat = ThreatModel::new(Norm::Linf, 0.1).unwrap();
    let plain = std_model();
    let wrapped = Defended::new(std_model(), "bits:depth=1".parse().unwrap()).unwrap();
    // Out of the ball: an error for the wrapped model exactly as for the plain one.
    let too_far = (&x + 0.2).clamp(0.0, 1.0);
    for m in [plain.as_ref(), &wrapped as &dyn Classifier] {
        assert!(matches!(
            verify_batch(m, &threat, &idx, &x, &too_far, &y, None),
            Err(GibbonError::Verification(_))
        ));
    }
    // FGSM examples of the plain model: the verdict is the wrapped model's fresh prediction.
    let ce = |l: &Tensor| l.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0);
    let (_, _, g) = plain.loss_and_input_grad(&x, &ce).unwrap();
    let adv = threat.project(&x, &(&x + g.sign() * 0.1));
    let on_plain = verify_batch(plain.as_ref(), &threat, &idx, &x, &adv, &y, None).unwrap();
    let on_wrapped = verify_batch(&wrapped, &threat, &idx, &x, &adv, &y, None).unwrap();
    let pred = wrapped.predict(&adv).unwrap();
    for (i, v) in on_wrapped.iter().enumerate() {
        let fooled = pred.int64_value(&[i as i64]) != y.int64_value(&[i as i64]);
        assert_eq!(v.broken, fooled, "sample {i}");
    }
    let broken = |vs: &[gibbon::eval::Verdict]| vs.iter().filter(|v| v.broken).count();
    assert!(broken(&on_wrapped) < broken(&on_plain), "1-bit squeezing undoes some FGSM examples");
}
