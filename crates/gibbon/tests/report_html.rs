//! Tests of `gibbon::report`: PNG encoding, perturbation pictures and the HTML report.
use base64::Engine as _;
use gibbon::report::{
    auto_amplification, encode_png, perturbation_image, write_png, ExampleCard, HtmlReport,
    ImageData, SummaryTable,
};

/// Decodes a PNG into (width, height, colour type, bit depth, bytes).
fn decode(bytes: &[u8]) -> (u32, u32, png::ColorType, png::BitDepth, Vec<u8>) {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, info.bit_depth, buf)
}

/// What the encoder must store for a value: NaN → 0, clamp to [0, 1], round(v·255).
fn expected_byte(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[test]
fn grayscale_png_round_trips_with_clamping_and_rounding() {
    let pixels = vec![
        0.0,
        1.0,
        0.5,
        0.2,
        -0.7,
        1.3,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.001,
        0.999,
        0.501_960_8, // 128/255
    ];
    let img = ImageData::new(1, 3, 4, pixels.clone()).unwrap();
    let (w, h, color, depth, data) = decode(&encode_png(&img).unwrap());
    assert_eq!((w, h), (4, 3));
    assert_eq!(color, png::ColorType::Grayscale);
    assert_eq!(depth, png::BitDepth::Eight);
    let expected: Vec<u8> = pixels.iter().map(|&v| expected_byte(v)).collect();
    assert_eq!(data, expected);
    assert_eq!(&data[..7], &[0, 255, 128, 51, 0, 255, 0]);
}

#[test]
fn rgb_png_round_trips_chw_to_interleaved() {
    // 2x2 image: red plane, green plane, blue plane.
    let red = [1.0, 0.0, 0.25, 0.5];
    let green = [0.0, 1.0, 0.75, 0.5];
    let blue = [0.0, 0.0, 2.0, -1.0];
    let pixels: Vec<f32> = red.iter().chain(&green).chain(&blue).copied().collect();
    let img = ImageData::new(3, 2, 2, pixels).unwrap();
    let (w, h, color, depth, data) = decode(&encode_png(&img).unwrap());
    assert_eq!((w, h), (2, 2));
    assert_eq!(color, png::ColorType::Rgb);
    assert_eq!(depth, png::BitDepth::Eight);
    let mut expected = Vec::new();
    for i in 0..4 {
        expected.extend([expected_byte(red[i]), expected_byte(green[i]), expected_byte(blue[i])]);
    }
    assert_eq!(data, expected);
    assert_eq!(&data[..3], &[255, 0, 0]);
}

#[test]
fn write_png_writes_a_decodable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digit.png");
    let img = ImageData::new(1, 28, 28, (0..784).map(|i| i as f32 / 783.0).collect()).unwrap();
    write_png(&path, &img).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (w, h, _, _, data) = decode(&bytes);
    assert_eq!((w, h), (28, 28));
    assert_eq!(data[0], 0);
    assert_eq!(data[783], 255);

    let missing = dir.path().join("no/such/dir/digit.png");
    let err = write_png(&missing, &img).unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("digit.png"), "{err}");
}

#[test]
fn invalid_images_are_errors_not_panics() {
    assert!(ImageData::new(1, 2, 2, vec![0.0; 3]).is_err());
    assert!(ImageData::new(2, 2, 2, vec![0.0; 8]).is_err());
    assert!(ImageData::new(4, 1, 1, vec![0.0; 4]).is_err());
    assert!(ImageData::new(1, 0, 5, vec![]).is_err());
    assert!(ImageData::new(3, usize::MAX, 2, vec![]).is_err());
    // Inconsistent public fields are caught by every function that takes an image.
    let bad = ImageData { channels: 1, height: 5, width: 5, pixels: vec![0.5; 3] };
    assert!(encode_png(&bad).is_err());
    assert!(bad.upscale(2).is_err());
    let good = ImageData::new(1, 5, 5, vec![0.5; 25]).unwrap();
    assert!(perturbation_image(&good, &bad, 1.0).is_err());
    assert!(perturbation_image(&bad, &good, 1.0).is_err());
    assert_eq!(auto_amplification(&good, &bad), 1.0);
}

#[test]
fn upscale_is_nearest_neighbour() {
    let img = ImageData::new(1, 2, 3, vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
    let big = img.upscale(4).unwrap();
    assert_eq!((big.channels, big.height, big.width), (1, 8, 12));
    for y in 0..8 {
        for x in 0..12 {
            assert_eq!(big.pixels[y * 12 + x], img.pixels[(y / 4) * 3 + x / 4], "at {y},{x}");
        }
    }
    let rgb = ImageData::new(3, 1, 1, vec![0.1, 0.2, 0.3]).unwrap();
    let big = rgb.upscale(2).unwrap();
    assert_eq!(big.pixels, vec![0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3]);
    assert_eq!(img.upscale(1).unwrap(), img);
    assert!(img.upscale(0).is_err());
    assert!(img.upscale(1 << 20).is_err());
    assert!(img.upscale(usize::MAX).is_err());
}

#[test]
fn perturbation_is_grey_where_unchanged_and_light_or_dark_where_changed() {
    let original = ImageData::new(1, 1, 5, vec![0.2, 0.5, 0.5, 0.9, 0.0]).unwrap();
    let adversarial = ImageData::new(1, 1, 5, vec![0.2, 0.6, 0.4, 0.9, 1.0]).unwrap();
    let p = perturbation_image(&original, &adversarial, 2.0).unwrap();
    assert_eq!((p.channels, p.height, p.width), (1, 1, 5));
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(p.pixels[0], 0.5), "unchanged → grey: {:?}", p.pixels);
    assert!(close(p.pixels[1], 0.7), "raised → lighter: {:?}", p.pixels);
    assert!(close(p.pixels[2], 0.3), "lowered → darker: {:?}", p.pixels);
    assert!(close(p.pixels[3], 0.5));
    assert_eq!(p.pixels[4], 1.0, "clamped to white");

    // Unchanged pixels encode as mid-grey 128.
    let (_, _, _, _, bytes) = decode(&encode_png(&p).unwrap());
    assert_eq!(bytes[0], 128);
    assert!(bytes[1] > 128 && bytes[2] < 128);

    let other_shape = ImageData::new(1, 5, 1, vec![0.0; 5]).unwrap();
    assert!(perturbation_image(&original, &other_shape, 1.0).is_err());
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(perturbation_image(&original, &adversarial, bad).is_err(), "amplify {bad}");
    }
}

#[test]
fn auto_amplification_maps_the_largest_change_to_half() {
    let original = ImageData::new(1, 2, 2, vec![0.5, 0.5, 0.5, 0.5]).unwrap();
    let adversarial = ImageData::new(1, 2, 2, vec![0.5, 0.6, 0.3, 0.55]).unwrap();
    let amplify = auto_amplification(&original, &adversarial);
    assert!((amplify - 0.5 / 0.2).abs() < 1e-3, "{amplify}");
    let p = perturbation_image(&original, &adversarial, amplify).unwrap();
    // The largest |δ| (0.2, downward) lands on black; the rest stay inside.
    assert!(p.pixels[2].abs() < 1e-5, "{:?}", p.pixels);
    assert!((p.pixels[0] - 0.5).abs() < 1e-6);
    assert!(p.pixels[1] > 0.5 && p.pixels[1] < 1.0);
    // Max over δ of |amplify·δ| is exactly 0.5.
    let max = original
        .pixels
        .iter()
        .zip(&adversarial.pixels)
        .map(|(o, a)| (amplify * (a - o)).abs())
        .fold(0.0_f32, f32::max);
    assert!((max - 0.5).abs() < 1e-5, "{max}");

    assert_eq!(auto_amplification(&original, &original), 1.0);
    let with_nan = ImageData::new(1, 2, 2, vec![f32::NAN, 0.6, 0.5, 0.5]).unwrap();
    let amplify = auto_amplification(&original, &with_nan);
    assert!((amplify - 5.0).abs() < 1e-3, "{amplify}");
    assert_eq!(perturbation_image(&original, &with_nan, amplify).unwrap().pixels[0], 0.5);
}

// ---------------------------------------------------------------------------------------------
// Synthetic digits for the HTML tests and the demo page.

const SIDE: usize = 28;

/// A line segment between two points (x, y) in pixel coordinates.
type Segment = ((f32, f32), (f32, f32));

/// A 28×28 "digit" drawn from line segments (in pixel coordinates) with soft 1.6 px strokes.
fn draw(segments: &[Segment]) -> ImageData {
    let mut pixels = vec![0.0_f32; SIDE * SIDE];
    for (y, row) in pixels.chunks_mut(SIDE).enumerate() {
        for (x, px) in row.iter_mut().enumerate() {
            let p = (x as f32 + 0.5, y as f32 + 0.5);
            let d = segments
                .iter()
                .map(|&(a, b)| distance_to_segment(p, a, b))
                .fold(f32::INFINITY, f32::min);
            *px = (1.0 - (d - 1.0) / 1.2).clamp(0.0, 1.0);
        }
    }
    ImageData::new(1, SIDE, SIDE, pixels).unwrap()
}

fn distance_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

fn digit(d: u8) -> ImageData {
    match d {
        7 => draw(&[((7.0, 6.0), (21.0, 6.0)), ((21.0, 6.0), (12.0, 23.0))]),
        1 => draw(&[((15.0, 5.0), (15.0, 23.0)), ((15.0, 5.0), (11.0, 9.0))]),
        4 => draw(&[
            ((17.0, 5.0), (7.0, 17.0)),
            ((7.0, 17.0), (21.0, 17.0)),
            ((17.0, 5.0), (17.0, 23.0)),
        ]),
        _ => {
            // A zero: a polygon approximating an ellipse.
            let n = 24;
            let pts: Vec<(f32, f32)> = (0..=n)
                .map(|i| {
                    let t = i as f32 / n as f32 * std::f32::consts::TAU;
                    (14.0 + 6.0 * t.cos(), 14.0 + 8.5 * t.sin())
                })
                .collect();
            let segs: Vec<_> = pts.windows(2).map(|w| (w[0], w[1])).collect();
            draw(&segs)
        }
    }
}

/// An FGSM-like perturbation: ±eps on every pixel by a fixed pseudo-random sign, clamped.
fn attack(img: &ImageData, eps: f32, seed: u64) -> ImageData {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let pixels = img
        .pixels
        .iter()
        .map(|&v| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let sign = if (state >> 33) & 1 == 0 { 1.0 } else { -1.0 };
            (v + sign * eps).clamp(0.0, 1.0)
        })
        .collect();
    ImageData::new(img.channels, img.height, img.width, pixels).unwrap()
}

fn card(index: usize, d: u8, eps: f32, adv_pred: &str, adv_conf: f32) -> ExampleCard {
    let original = digit(d);
    let adversarial = attack(&original, eps, index as u64);
    ExampleCard {
        index,
        label: d.to_string(),
        original,
        adversarial,
        clean_prediction: d.to_string(),
        clean_confidence: 0.991,
        adversarial_prediction: adv_pred.to_string(),
        adversarial_confidence: adv_conf,
        norm_text: format!("L∞ {eps:.3}"),
        broken: adv_pred != d.to_string(),
    }
}

fn demo_cards() -> Vec<ExampleCard> {
    vec![
        card(0, 7, 0.3, "3", 0.872),
        card(2, 1, 0.3, "8", 0.645),
        card(3, 0, 0.3, "0", 0.713),
        card(4, 4, 0.1, "9", 0.518),
    ]
}

fn results_table() -> SummaryTable {
    let mut table = SummaryTable::new(vec![
        "attack".into(),
        "ε".into(),
        "clean accuracy".into(),
        "robust accuracy".into(),
        "mean L∞".into(),
    ]);
    table.push_row(vec!["none".into(), "0".into(), "99.1%".into(), "99.1%".into(), "0.000".into()]);
    table.push_row(vec![
        "FGSM".into(),
        "0.1".into(),
        "99.1%".into(),
        "71.4%".into(),
        "0.100".into(),
    ]);
    table.push_row(vec![
        "FGSM".into(),
        "0.3".into(),
        "99.1%".into(),
        "9.8%".into(),
        "0.300".into(),
    ]);
    table.push_row(vec![
        "PGD-40".into(),
        "0.3".into(),
        "99.1%".into(),
        "0.0%".into(),
        "0.300".into(),
    ]);
    table
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn report_escapes_all_text() {
    let mut evil = demo_cards().remove(0);
    evil.label = "<script>alert('label')</script>".into();
    evil.adversarial_prediction = "\"><img src=x onerror=alert(1)>".into();
    evil.norm_text = "L∞ <b>0.3</b> & more".into();
    let mut table = SummaryTable::new(vec!["<th>".into()]);
    table.push_row(vec!["a & b".into()]);
    let html = HtmlReport::new("<script>alert(\"title\")</script> & co")
        .intro("Intro with <em>tags</em>.")
        .add_table("<h2>", table)
        .add_examples("Examples <1>", "note <i>", vec![evil])
        .add_json("json <x>", &serde_json::json!({"key": "</pre><script>"}))
        .render();
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<img src=x"), "unescaped attribute breakout");
    assert!(!html.contains("<em>") && !html.contains("<b>0.3") && !html.contains("<th><th>"));
    assert!(html
        .contains("<title>&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt; &amp; co</title>"));
    assert!(
        html.contains("<h1>&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt; &amp; co</h1>")
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;"));
    assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("L∞ &lt;b&gt;0.3&lt;/b&gt; &amp; more"));
    assert!(html.contains("&lt;/pre&gt;&lt;script&gt;"));
    assert!(html.contains("<th>&lt;th&gt;</th>") && html.contains("<td>a &amp; b</td>"));
}

#[test]
fn report_embeds_three_decodable_pngs_per_card() {
    let cards = demo_cards();
    let n = cards.len();
    let html = HtmlReport::new("digits").add_examples("Examples", "", cards).render();
    assert_eq!(count(&html, "data:image/png"), 3 * n);
    assert_eq!(count(&html, "<article class=\"card"), n);
    // No external resources of any kind.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"));
    for chunk in html.split("src=\"data:image/png;base64,").skip(1) {
        let b64 = &chunk[..chunk.find('"').unwrap()];
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let (w, h, color, _, _) = decode(&bytes);
        assert_eq!((w, h), (112, 112), "28×28 digits are upscaled 4×");
        assert_eq!(color, png::ColorType::Grayscale);
    }
    // Each card's three pictures sit inside that card.
    for article in html.split("<article").skip(1) {
        let article = &article[..article.find("</article>").unwrap()];
        assert_eq!(count(article, "data:image/png"), 3);
    }
}

#[test]
fn cards_show_answers_and_colour_by_outcome() {
    let html = HtmlReport::new("t").add_examples("Examples", "A note.", demo_cards()).render();
    let articles: Vec<&str> = html.split("<article").skip(1).collect();
    assert_eq!(articles.len(), 4);
    // Card 0: label 7 broken into 3 at 87.2%.
    assert!(articles[0].starts_with(" class=\"card bad\""));
    assert!(articles[0].contains("#0"));
    assert!(articles[0].contains("original · label <b>7</b>"));
    assert!(articles[0]
        .contains("<span class=\"who\">model</span> 7 <span class=\"conf\">99.1%</span>"));
    assert!(articles[0].contains("<span class=\"answer bad\"><span class=\"who\">model</span> 3 <span class=\"conf\">87.2%</span>"));
    assert!(articles[0].contains("L∞ 0.300"));
    assert!(articles[0].contains("×1.7 amplified"), "0.5/0.3 ≈ 1.7");
    // Card 3 (index 3): a zero that held.
    assert!(articles[2].starts_with(" class=\"card good\""));
    assert!(articles[2].contains("<span class=\"answer good\"><span class=\"who\">model</span> 0 <span class=\"conf\">71.3%</span>"));
    assert!(articles[3].contains("×5 amplified") && articles[3].contains("L∞ 0.100"));
    assert!(html.contains("<p class=\"note\">A note.</p>"));
    assert!(html.contains("3 broken") && html.contains("1 held"));
}

#[test]
fn report_contains_table_cells_and_json_and_is_written_to_file() {
    let summary =
        serde_json::json!({"model": "mnist-cnn", "attacks": [{"name": "FGSM", "eps": 0.3}]});
    let mut ragged = SummaryTable::new(vec!["a".into(), "b".into(), "c".into()]);
    ragged.push_row(vec!["only one".into()]);
    let report = HtmlReport::new("MNIST robustness")
        .intro("First paragraph.\n\nSecond paragraph.")
        .add_table("Results", results_table())
        .add_table("Ragged", ragged)
        .add_table("Empty", SummaryTable::default())
        .add_examples("Nothing here", "", vec![])
        .add_json("Raw results", &summary);
    let html = report.render();
    for cell in ["attack", "robust accuracy", "mean L∞", "PGD-40"] {
        assert!(html.contains(&format!(">{cell}</t")), "cell {cell}");
    }
    assert!(html.contains("<td class=\"num\">71.4%</td>"));
    assert!(html.contains("<td class=\"num\">0.300</td>"));
    assert!(html.contains("<td>FGSM</td>"));
    assert!(
        html.contains("<th class=\"num\">robust accuracy</th>") && html.contains("<th>attack</th>")
    );
    assert!(html.contains("<tr><td>only one</td><td></td><td></td></tr>"));
    assert!(html.contains("No data.") && html.contains("No examples."));
    assert!(html.contains("<p class=\"intro\">First paragraph.</p>"));
    assert!(html.contains("<p class=\"intro\">Second paragraph.</p>"));
    assert!(html.contains("<details class=\"json\">\n<summary>Raw results</summary>"));
    assert!(html.contains("&quot;model&quot;: &quot;mnist-cnn&quot;"), "pretty JSON, escaped");
    assert!(html.contains("href=\"#section-1\"") && html.contains("id=\"section-5\""));
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    report.write(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), html);
    let err = report.write(dir.path().join("missing/report.html")).unwrap_err();
    assert!(err.is_user_error());
}

#[test]
fn invalid_example_images_show_a_placeholder_and_block_writing() {
    let mut bad = demo_cards().remove(0);
    bad.adversarial = ImageData::new(1, 14, 14, vec![0.0; 196]).unwrap();
    let mut worse = demo_cards().remove(1);
    worse.original.pixels.truncate(10);
    let report = HtmlReport::new("t").add_examples("Examples", "", vec![bad, worse]);
    let html = report.render();
    assert_eq!(count(&html, "<article"), 2);
    assert!(count(&html, "class=\"missing\"") >= 3, "{html}");
    // Card 1: original and adversarial fine, perturbation impossible. Card 2: only the
    // adversarial can be drawn.
    assert_eq!(count(&html, "data:image/png"), 3);
    let err = report.validate().unwrap_err();
    assert!(err.to_string().contains("example 0"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    assert!(report.write(dir.path().join("r.html")).is_err());
    assert!(!dir.path().join("r.html").exists());
}

#[test]
fn unchanged_example_says_no_change() {
    let mut same = demo_cards().remove(2);
    same.adversarial = same.original.clone();
    same.adversarial_confidence = f32::NAN;
    let html = HtmlReport::new("t").add_examples("Examples", "", vec![same]).render();
    assert!(html.contains("no change"));
    assert!(html.contains("n/a"));
    assert_eq!(count(&html, "data:image/png"), 3);
}

/// Writes the demo page ("the panda → gibbon moment, on digits"). Set GIBBON_REPORT_DEMO to a
/// path to keep it, e.g. to look at it in a browser; otherwise it goes to a temporary folder.
#[test]
fn demo_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("GIBBON_REPORT_DEMO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("report_demo.html"));
    let report = HtmlReport::new("MNIST robustness report: small CNN")
        .intro(
            "Adversarial robustness of a small convolutional network on handwritten digits. \
             Every attack is white-box and bounded in L∞; an example counts as broken when \
             the model's answer on the adversarial input differs from the true label.\n\n\
             The pictures below are synthetic stand-ins for MNIST digits.",
        )
        .add_table("Results", results_table())
        .add_examples(
            "Adversarial examples",
            "Original + perturbation = adversarial. The perturbation is amplified so that its \
             largest change is pure white or black.",
            demo_cards(),
        )
        .add_json(
            "Raw results (JSON)",
            &serde_json::json!({
                "model": "mnist-cnn.safetensors",
                "dataset": {"name": "mnist-test", "examples": 10000},
                "attacks": [
                    {"name": "FGSM", "eps": 0.1, "robust_accuracy": 0.714},
                    {"name": "FGSM", "eps": 0.3, "robust_accuracy": 0.098},
                    {"name": "PGD", "eps": 0.3, "steps": 40, "robust_accuracy": 0.0}
                ]
            }),
        );
    report.write(&path).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert_eq!(count(&html, "data:image/png"), 12);
}
