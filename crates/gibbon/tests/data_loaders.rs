//! Tests of `gibbon::data`: the real MNIST files, round trips through generated files of every
//! format, and every malformed-input error.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use gibbon::data::{write_npy_f32, write_npy_i64, write_npy_u8, DataSpec, Dataset, Split};
use gibbon::error::GibbonError;
use tch::{Device, Kind, Tensor};

/// The shared MNIST folder; `GIBBON_SHARED` overrides the shared root.
fn mnist_dir() -> PathBuf {
    match std::env::var_os("GIBBON_SHARED") {
        Some(shared) => PathBuf::from(shared).join("data/mnist"),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/mnist")),
    }
}

fn mnist(split: Split, limit: Option<usize>) -> Dataset {
    let spec = DataSpec::Idx(mnist_dir());
    Dataset::load(&spec, split, limit).unwrap_or_else(|e| panic!("loading MNIST {split}: {e}"))
}

fn label_counts(labels: &[i64]) -> [usize; 10] {
    let mut counts = [0; 10];
    for &label in labels {
        counts[usize::try_from(label).unwrap()] += 1;
    }
    counts
}

fn to_vec_f32(t: &Tensor) -> Vec<f32> {
    let flat = t.to_kind(Kind::Float).flatten(0, -1);
    let mut out = vec![0f32; flat.numel()];
    flat.copy_data(&mut out, flat.numel());
    out
}

/// Asserts `result` is an error of the variant `matches`, is a user error, and its message
/// contains every string in `needles`.
fn assert_user_error<T: std::fmt::Debug>(
    result: Result<T, GibbonError>,
    matches: fn(&GibbonError) -> bool,
    needles: &[&str],
) -> GibbonError {
    let error = result.expect_err("expected an error");
    assert!(matches(&error), "wrong variant: {error:?}");
    assert!(error.is_user_error(), "not a user error: {error:?}");
    let message = error.to_string();
    for needle in needles {
        assert!(message.contains(needle), "message {message:?} does not mention {needle:?}");
    }
    error
}

fn is_io(e: &GibbonError) -> bool {
    matches!(e, GibbonError::Io { .. })
}
fn is_format(e: &GibbonError) -> bool {
    matches!(e, GibbonError::Format { .. })
}
fn is_invalid(e: &GibbonError) -> bool {
    matches!(e, GibbonError::InvalidArgument { .. })
}

// ---------------------------------------------------------------- real MNIST

#[test]
fn mnist_test_split_loads() {
    let data = mnist(Split::Test, None);
    assert_eq!(data.len(), 10_000);
    assert!(!data.is_empty());
    assert_eq!(data.sample_shape(), vec![1, 28, 28]);
    assert_eq!(&data.labels()[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(
        label_counts(data.labels()),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(data.images().kind(), Kind::Uint8);
    assert!(data.class_names().is_none());
    assert_eq!(data.num_classes(), 10);
    assert!(data.name().starts_with("idx:") && data.name().ends_with("(test)"), "{}", data.name());

    let all: Vec<usize> = (0..data.len()).collect();
    let batch = data.batch(&all, Device::Cpu);
    assert_eq!(batch.size(), vec![10_000, 1, 28, 28]);
    assert_eq!(batch.kind(), Kind::Float);
    assert_eq!(batch.min().double_value(&[]), 0.0);
    assert_eq!(batch.max().double_value(&[]), 1.0);
}

#[test]
fn mnist_limit_reads_first_samples() {
    let data = mnist(Split::Test, Some(25));
    assert_eq!(data.len(), 25);
    assert_eq!(&data.labels()[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(data.images().size(), vec![25, 1, 28, 28]);
    let labels = data.labels_of(&[4, 0, 1], Device::Cpu);
    assert_eq!(labels.kind(), Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(&labels).unwrap(), vec![4, 7, 2]);
    // A limit beyond the data is the whole split.
    assert_eq!(mnist(Split::Test, Some(1_000_000)).len(), 10_000);
    let zero = Dataset::load(&DataSpec::Idx(mnist_dir()), Split::Test, Some(0));
    assert_user_error(zero, is_invalid, &["limit"]);
}

#[test]
fn mnist_train_split_loads() {
    let data = mnist(Split::Train, None);
    assert_eq!(data.len(), 60_000);
    assert_eq!(data.sample_shape(), vec![1, 28, 28]);
    let counts = label_counts(data.labels());
    assert_eq!(counts.iter().sum::<usize>(), 60_000);
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(&data.labels()[..5], &[5, 0, 4, 1, 9]);
}

// ---------------------------------------------------------------- specs

#[test]
fn specs_parse_and_display_round_trip() {
    for text in ["idx:data/mnist", "cifar10:/x/cifar", "images:pics", "npy:a.npy,b.npy"] {
        let spec: DataSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), text);
    }
    assert_eq!(
        "npy:x/i.npy,y/l.npy".parse::<DataSpec>().unwrap(),
        DataSpec::Npy { images: "x/i.npy".into(), labels: "y/l.npy".into() }
    );
    assert_eq!("idx:d".parse::<DataSpec>().unwrap(), DataSpec::Idx("d".into()));
    assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
    assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
    assert_eq!(Split::Test.to_string(), "test");
}

#[test]
fn bad_specs_are_rejected() {
    let error = assert_user_error(
        "mnist:/data".parse::<DataSpec>(),
        is_invalid,
        &["mnist:/data", "idx:", "cifar10:", "images:", "npy:"],
    );
    assert!(error.to_string().starts_with("invalid data"), "{error}");
    assert_user_error("no-scheme".parse::<DataSpec>(), is_invalid, &["no-scheme"]);
    assert_user_error("idx:".parse::<DataSpec>(), is_invalid, &["idx:"]);
    assert_user_error("npy:only.npy".parse::<DataSpec>(), is_invalid, &["npy:only.npy"]);
    assert_user_error("validation".parse::<Split>(), is_invalid, &["validation", "split"]);
}

// ---------------------------------------------------------------- IDX

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for v in [count, rows, cols] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Three 4x5 images with pixel values 0..60 and labels 3, 1, 4.
fn small_idx() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..60).map(|v| (v * 4) as u8).collect();
    (idx_images(3, 4, 5, &pixels), idx_labels(&[3, 1, 4]), pixels)
}

fn check_small_idx(dir: &Path, pixels: &[u8]) {
    let data = Dataset::load(&DataSpec::Idx(dir.to_path_buf()), Split::Train, None).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data.sample_shape(), vec![1, 4, 5]);
    assert_eq!(data.labels(), &[3, 1, 4]);
    let batch = data.batch(&[0, 1, 2], Device::Cpu);
    let expected: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    assert_eq!(to_vec_f32(&batch), expected);
    let second = data.batch(&[1], Device::Cpu);
    assert_eq!(to_vec_f32(&second), expected[20..40].to_vec());
}

#[test]
fn idx_round_trip_gzipped_and_plain() {
    let (images, labels, pixels) = small_idx();

    let gz = tempfile::tempdir().unwrap();
    fs::write(gz.path().join("train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
    fs::write(gz.path().join("train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    check_small_idx(gz.path(), &pixels);

    let plain = tempfile::tempdir().unwrap();
    fs::write(plain.path().join("train-images-idx3-ubyte"), &images).unwrap();
    fs::write(plain.path().join("train-labels-idx1-ubyte"), &labels).unwrap();
    check_small_idx(plain.path(), &pixels);

    // Compression is recognised by its magic bytes, not the file name.
    let mixed = tempfile::tempdir().unwrap();
    fs::write(mixed.path().join("train-images-idx3-ubyte"), gzip(&images)).unwrap();
    fs::write(mixed.path().join("train-labels-idx1-ubyte.gz"), &labels).unwrap();
    check_small_idx(mixed.path(), &pixels);

    let limited =
        Dataset::load(&DataSpec::Idx(plain.path().into()), Split::Train, Some(2)).unwrap();
    assert_eq!(limited.labels(), &[3, 1]);
    assert_eq!(limited.images().size(), vec![2, 1, 4, 5]);
}

fn write_idx_pair(images: &[u8], labels: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), images).unwrap();
    fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels).unwrap();
    dir
}

fn load_idx_test(dir: &Path) -> Result<Dataset, GibbonError> {
    Dataset::load(&DataSpec::Idx(dir.to_path_buf()), Split::Test, None)
}

#[test]
fn idx_missing_file_names_both_candidates() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(
        load_idx_test(dir.path()),
        is_io,
        &["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"],
    );
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx_images(0, 2, 2, &[])).unwrap();
    assert_user_error(
        load_idx_test(dir.path()),
        is_io,
        &["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"],
    );
    assert_user_error(load_idx_test(&dir.path().join("absent")), is_io, &["absent"]);
}

#[test]
fn idx_corrupt_gzip_is_a_format_error() {
    let (_, labels, _) = small_idx();
    // A valid gzip member header followed by bytes that are not a deflate stream.
    let mut corrupt = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
    corrupt.extend_from_slice(&[0xff; 64]);
    let dir = write_idx_pair(&corrupt, &labels);
    assert_user_error(load_idx_test(dir.path()), is_format, &["t10k-images-idx3-ubyte.gz", "gzip"]);

    // A gzip stream cut off in the middle.
    let (images, labels, _) = small_idx();
    let whole = gzip(&images);
    let dir = write_idx_pair(&whole[..whole.len() / 2], &labels);
    assert_user_error(load_idx_test(dir.path()), is_format, &["t10k-images-idx3-ubyte.gz"]);
}

#[test]
fn idx_wrong_magic_is_reported_in_hex() {
    let (_, labels, pixels) = small_idx();
    let mut images = idx_images(3, 4, 5, &pixels);
    images[3] = 2;
    let dir = write_idx_pair(&gzip(&images), &labels);
    assert_user_error(
        load_idx_test(dir.path()),
        is_format,
        &["t10k-images-idx3-ubyte.gz", "0x00000802", "0x00000803"],
    );
    // Images and labels swapped.
    let (images, labels, _) = small_idx();
    let dir = write_idx_pair(&gzip(&labels), &images);
    assert_user_error(load_idx_test(dir.path()), is_format, &["0x00000801", "0x00000803"]);
}

#[test]
fn idx_short_data_is_reported() {
    let (_, labels, pixels) = small_idx();
    let images = idx_images(3, 4, 5, &pixels[..50]);
    let dir = write_idx_pair(&gzip(&images), &labels);
    assert_user_error(
        load_idx_test(dir.path()),
        is_format,
        &["t10k-images-idx3-ubyte.gz", "shorter", "60", "50"],
    );
    // A header cut short.
    let dir = write_idx_pair(&gzip(&images[..10]), &labels);
    assert_user_error(load_idx_test(dir.path()), is_format, &["too short"]);
    // Short labels.
    let (images, _, _) = small_idx();
    let mut labels = idx_labels(&[3, 1, 4]);
    labels.pop();
    let dir = write_idx_pair(&gzip(&images), &labels);
    assert_user_error(load_idx_test(dir.path()), is_format, &["t10k-labels-idx1-ubyte", "shorter"]);
    // Data beyond what the header declares.
    let (mut images, labels, _) = small_idx();
    images.extend_from_slice(&[1, 2, 3]);
    let dir = write_idx_pair(&gzip(&images), &labels);
    assert_user_error(load_idx_test(dir.path()), is_format, &["extra data"]);
}

#[test]
fn idx_count_mismatch_is_reported() {
    let (images, _, _) = small_idx();
    let dir = write_idx_pair(&gzip(&images), &idx_labels(&[1, 2]));
    assert_user_error(
        load_idx_test(dir.path()),
        is_format,
        &["t10k-labels-idx1-ubyte", "2 labels", "3 images"],
    );
}

// ---------------------------------------------------------------- CIFAR-10

/// A CIFAR-10 record whose channel `c`, row `y`, column `x` holds `(label + 3c + y + x) % 256`.
fn cifar_record(label: u8) -> Vec<u8> {
    let mut record = vec![label];
    for c in 0..3u32 {
        for y in 0..32u32 {
            for x in 0..32u32 {
                record.push(((u32::from(label) + 3 * c + y + x) % 256) as u8);
            }
        }
    }
    record
}

#[test]
fn cifar_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("cifar-10-batches-bin");
    fs::create_dir(&folder).unwrap();
    let mut bytes = cifar_record(3);
    bytes.extend(cifar_record(9));
    fs::write(folder.join("test_batch.bin"), &bytes).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    fs::write(folder.join("batches.meta.txt"), names).unwrap();

    let data = Dataset::load(&DataSpec::Cifar10(dir.path().into()), Split::Test, None).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.sample_shape(), vec![3, 32, 32]);
    assert_eq!(data.labels(), &[3, 9]);
    assert_eq!(data.class_names().map(<[String]>::len), Some(10));
    assert_eq!(data.class_names().unwrap()[3], "cat");
    let images = data.images();
    for (n, label) in [(0i64, 3i64), (1, 9)] {
        for (c, y, x) in [(0i64, 0i64, 0i64), (1, 5, 7), (2, 31, 30)] {
            let expected = (label + 3 * c + y + x) % 256;
            assert_eq!(images.int64_value(&[n, c, y, x]), expected, "n={n} c={c} y={y} x={x}");
        }
    }
    let limited = Dataset::load(&DataSpec::Cifar10(folder.clone()), Split::Test, Some(1)).unwrap();
    assert_eq!(limited.labels(), &[3]);
}

#[test]
fn cifar_errors() {
    let dir = tempfile::tempdir().unwrap();
    let load = |split| Dataset::load(&DataSpec::Cifar10(dir.path().into()), split, None);
    assert_user_error(load(Split::Test), is_io, &["test_batch.bin", "cifar-10-batches-bin"]);

    let mut bytes = cifar_record(1);
    bytes.push(0);
    fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    assert_user_error(load(Split::Test), is_format, &["test_batch.bin", "3074", "3073"]);

    let mut bytes = cifar_record(1);
    bytes.extend(cifar_record(10));
    fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    assert_user_error(load(Split::Test), is_format, &["test_batch.bin", "label 10"]);

    fs::write(dir.path().join("data_batch_1.bin"), cifar_record(0)).unwrap();
    assert_user_error(load(Split::Train), is_io, &["data_batch_2.bin"]);
}

// ---------------------------------------------------------------- PNG folders

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) {
    let file = fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(data).unwrap();
}

#[test]
fn image_dir_round_trip_gray() {
    let dir = tempfile::tempdir().unwrap();
    let split = dir.path().join("train");
    for class in ["dog", "cat"] {
        fs::create_dir_all(split.join(class)).unwrap();
    }
    fs::create_dir_all(dir.path().join("test/cat")).unwrap();
    use png::{BitDepth, ColorType};
    // cat (class 0): 8-bit gray and 16-bit gray; dog (class 1): gray + alpha.
    write_png(
        &split.join("cat/b.png"),
        3,
        2,
        ColorType::Grayscale,
        BitDepth::Eight,
        &[0, 1, 2, 3, 4, 5],
    );
    let sixteen: Vec<u8> =
        [10u16, 20, 30, 40, 50, 65535].iter().flat_map(|v| (v << 8).to_be_bytes()).collect();
    write_png(&split.join("cat/a.png"), 3, 2, ColorType::Grayscale, BitDepth::Sixteen, &sixteen);
    let gray_alpha: Vec<u8> = (0..6u8).flat_map(|v| [200 + v, 7]).collect();
    write_png(
        &split.join("dog/1.png"),
        3,
        2,
        ColorType::GrayscaleAlpha,
        BitDepth::Eight,
        &gray_alpha,
    );
    fs::write(split.join("dog/notes.txt"), "not an image").unwrap();

    let data = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Train, None).unwrap();
    assert_eq!(data.class_names().unwrap(), &["cat".to_string(), "dog".to_string()]);
    assert_eq!(data.labels(), &[0, 0, 1]);
    assert_eq!(data.sample_shape(), vec![1, 2, 3]);
    let raw: Vec<f32> = to_vec_f32(data.images());
    assert_eq!(
        raw,
        vec![
            10., 20., 30., 40., 50., 255., 0., 1., 2., 3., 4., 5., 200., 201., 202., 203., 204.,
            205.
        ]
    );
    assert!(data.name().ends_with("(train)"));
    // The test split exists but is empty.
    let test = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Test, None);
    assert_user_error(test, is_format, &["no .png files"]);
}

#[test]
fn image_dir_round_trip_color() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        fs::create_dir(dir.path().join(class)).unwrap();
    }
    // 2x1 RGB: pixel 0 = (1,2,3), pixel 1 = (4,5,6).
    write_png(
        &dir.path().join("a/x.png"),
        2,
        1,
        ColorType::Rgb,
        BitDepth::Eight,
        &[1, 2, 3, 4, 5, 6],
    );
    write_png(
        &dir.path().join("b/y.png"),
        2,
        1,
        ColorType::Rgba,
        BitDepth::Eight,
        &[7, 8, 9, 255, 10, 11, 12, 0],
    );
    let data = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Test, Some(5)).unwrap();
    assert_eq!(data.sample_shape(), vec![3, 1, 2]);
    assert_eq!(data.labels(), &[0, 1]);
    // Channel-major: R plane, G plane, B plane.
    assert_eq!(to_vec_f32(data.images()), vec![1., 4., 2., 5., 3., 6., 7., 10., 8., 11., 9., 12.]);
    let batch = data.batch(&[1], Device::Cpu);
    assert!((batch.double_value(&[0, 0, 0, 1]) - 10.0 / 255.0).abs() < 1e-7);
    let limited =
        Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Test, Some(1)).unwrap();
    assert_eq!(limited.len(), 1);
    // A palette image is expanded to RGB.
    let file = fs::File::create(dir.path().join("b/z.png")).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 2, 1);
    encoder.set_color(ColorType::Indexed);
    encoder.set_depth(BitDepth::Eight);
    encoder.set_palette(vec![20, 21, 22, 30, 31, 32]);
    encoder.write_header().unwrap().write_image_data(&[1, 0]).unwrap();
    let data = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Test, None).unwrap();
    assert_eq!(data.labels(), &[0, 1, 1]);
    assert_eq!(to_vec_f32(&data.images().get(2)), vec![30., 20., 31., 21., 32., 22.]);
}

#[test]
fn image_dir_size_mismatch_names_the_file() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("only")).unwrap();
    write_png(&dir.path().join("only/1.png"), 2, 2, ColorType::Grayscale, BitDepth::Eight, &[0; 4]);
    write_png(&dir.path().join("only/2.png"), 3, 2, ColorType::Grayscale, BitDepth::Eight, &[0; 6]);
    let result = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Train, None);
    assert_user_error(result, is_format, &["2.png", "3x2", "2x2", "1.png"]);

    // Channel count differs.
    fs::remove_file(dir.path().join("only/2.png")).unwrap();
    write_png(&dir.path().join("only/2.png"), 2, 2, ColorType::Rgb, BitDepth::Eight, &[0; 12]);
    let result = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Train, None);
    assert_user_error(result, is_format, &["2.png", "3 channel"]);

    // Not a PNG at all.
    fs::write(dir.path().join("only/3.png"), b"hello").unwrap();
    fs::remove_file(dir.path().join("only/2.png")).unwrap();
    let result = Dataset::load(&DataSpec::ImageDir(dir.path().into()), Split::Train, None);
    assert_user_error(result, is_format, &["3.png"]);

    let empty = tempfile::tempdir().unwrap();
    let result = Dataset::load(&DataSpec::ImageDir(empty.path().into()), Split::Train, None);
    assert_user_error(result, is_format, &["no class subfolders"]);
}

// ---------------------------------------------------------------- npy

#[test]
fn npy_round_trip_f32_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("x.npy");
    let labels = dir.path().join("y.npy");
    let values: Vec<f32> = (0..24).map(|v| v as f32 / 23.0).collect();
    write_npy_f32(&images, &[2, 3, 2, 2], &values).unwrap();
    write_npy_i64(&labels, &[2], &[5, 0]).unwrap();
    let spec = DataSpec::Npy { images: images.clone(), labels: labels.clone() };
    let data = Dataset::load(&spec, Split::Train, None).unwrap();
    assert_eq!(data.images().kind(), Kind::Float);
    assert_eq!(data.sample_shape(), vec![3, 2, 2]);
    assert_eq!(data.labels(), &[5, 0]);
    assert_eq!(to_vec_f32(&data.batch(&[0, 1], Device::Cpu)), values);
    assert_eq!(data.name(), spec.to_string());
    assert_eq!(data.num_classes(), 6);

    let first = Dataset::load(&spec, Split::Test, Some(1)).unwrap();
    assert_eq!(first.labels(), &[5]);
    assert_eq!(to_vec_f32(first.images()), values[..12].to_vec());
}

#[test]
fn npy_round_trip_u8_three_dims() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("x.npy");
    let labels = dir.path().join("y.npy");
    let pixels: Vec<u8> = (0..18).map(|v| v * 15).collect();
    write_npy_u8(&images, &[2, 3, 3], &pixels).unwrap();
    write_npy_u8(&labels, &[2], &[1, 7]).unwrap();
    let data = Dataset::load(&DataSpec::Npy { images, labels }, Split::Test, None).unwrap();
    assert_eq!(data.images().kind(), Kind::Uint8);
    assert_eq!(data.sample_shape(), vec![1, 3, 3]);
    assert_eq!(data.labels(), &[1, 7]);
    let expected: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    assert_eq!(to_vec_f32(&data.batch(&[0, 1], Device::Cpu)), expected);
}

/// Writes a `.npy` file with an arbitrary header dict and version, padded like NumPy.
fn write_raw_npy(path: &Path, major: u8, dict: &str, data: &[u8]) {
    let length_bytes = if major == 1 { 2 } else { 4 };
    let mut header = dict.to_string();
    while !(8 + length_bytes + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[major, 0]);
    if major == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

#[test]
fn npy_other_dtypes_and_version_two() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("x.npy");
    let labels = dir.path().join("y.npy");
    let doubles: Vec<u8> = [0.0f64, 0.25, 0.5, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw_npy(
        &images,
        2,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 2), }",
        &doubles,
    );
    for (descr, bytes) in [
        ("<i4", 9i32.to_le_bytes().to_vec()),
        ("<i2", 9i16.to_le_bytes().to_vec()),
        ("|u1", vec![9u8]),
    ] {
        write_raw_npy(
            &labels,
            1,
            &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}"),
            &bytes,
        );
        let spec = DataSpec::Npy { images: images.clone(), labels: labels.clone() };
        let data = Dataset::load(&spec, Split::Train, None).unwrap();
        assert_eq!(data.labels(), &[9], "{descr}");
        assert_eq!(to_vec_f32(data.images()), vec![0.0, 0.25, 0.5, 1.0]);
    }
}

#[test]
fn npy_errors() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    let load = || {
        Dataset::load(
            &DataSpec::Npy { images: images.clone(), labels: labels.clone() },
            Split::Test,
            None,
        )
    };
    write_npy_i64(&labels, &[2], &[0, 1]).unwrap();

    assert_user_error(load(), is_io, &["images.npy"]);

    write_raw_npy(
        &images,
        1,
        "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 1, 2, 2), }",
        &[0; 8],
    );
    assert_user_error(load(), is_format, &["images.npy", "Fortran"]);

    write_npy_f32(&images, &[2, 1, 1, 2], &[0.0, 0.5, 1.5, 1.0]).unwrap();
    assert_user_error(load(), is_format, &["images.npy", "1.5", "[0, 1]"]);
    write_npy_f32(&images, &[2, 1, 1, 2], &[0.0, f32::NAN, 0.5, 1.0]).unwrap();
    assert_user_error(load(), is_format, &["images.npy", "NaN"]);
    write_npy_f32(&images, &[2, 1, 1, 2], &[0.0, -0.1, 0.5, 1.0]).unwrap();
    assert_user_error(load(), is_format, &["images.npy", "value -0.1 at"]);

    write_npy_f32(&images, &[3, 2, 2], &[0.5; 12]).unwrap();
    assert_user_error(load(), is_format, &["labels.npy", "2 labels", "3 images"]);

    write_npy_f32(&images, &[2, 2], &[0.5; 4]).unwrap();
    assert_user_error(load(), is_format, &["images.npy", "[N, C, H, W]"]);

    write_raw_npy(
        &images,
        1,
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 1, 1), }",
        &[0; 8],
    );
    assert_user_error(load(), is_format, &["images.npy", ">f4"]);

    write_raw_npy(
        &images,
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1), }",
        &[0; 4],
    );
    assert_user_error(load(), is_format, &["images.npy", "8 bytes", "holds 4"]);

    fs::write(&images, b"not numpy at all").unwrap();
    assert_user_error(load(), is_format, &["images.npy", "NUMPY"]);

    write_npy_u8(&images, &[2, 1, 1], &[1, 2]).unwrap();
    write_npy_f32(&labels, &[2], &[0.0, 1.0]).unwrap();
    assert_user_error(load(), is_format, &["labels.npy", "label dtype '<f4'"]);
    write_npy_i64(&labels, &[2], &[0, -3]).unwrap();
    assert_user_error(load(), is_format, &["labels.npy", "-3"]);

    assert_user_error(write_npy_f32(&images, &[2, 2], &[0.0; 3]), is_invalid, &["[2, 2]", "3"]);
}

// ---------------------------------------------------------------- from_tensor and batching

#[test]
fn from_tensor_validates_its_input() {
    let floats = Tensor::from_slice(&[0.0f32, 0.5, 1.0, 0.25]).view([2, 1, 1, 2]);
    let data = Dataset::from_tensor(floats, vec![0, 1], "made").unwrap();
    assert_eq!(data.name(), "made");
    assert_eq!(data.sample_shape(), vec![1, 1, 2]);
    assert_eq!(to_vec_f32(&data.batch(&[1, 0], Device::Cpu)), vec![1.0, 0.25, 0.0, 0.5]);
    assert_eq!(Vec::<i64>::try_from(&data.labels_of(&[1, 1], Device::Cpu)).unwrap(), vec![1, 1]);
    assert_user_error(data.try_batch(&[2], Device::Cpu), is_invalid, &["2", "made"]);
    assert_user_error(data.try_labels_of(&[9], Device::Cpu), is_invalid, &["9"]);

    let doubles = Tensor::from_slice(&[0.5f64, 1.0]).view([2, 1, 1, 1]);
    let data = Dataset::from_tensor(doubles, vec![0, 0], "doubles").unwrap();
    assert_eq!(data.images().kind(), Kind::Float);

    let bytes = Tensor::from_slice(&[0u8, 255]).view([2, 1, 1, 1]);
    let data = Dataset::from_tensor(bytes, vec![0, 0], "bytes").unwrap();
    assert_eq!(to_vec_f32(&data.batch(&[1], Device::Cpu)), vec![1.0]);

    let count =
        Dataset::from_tensor(Tensor::zeros([3, 1, 2, 2], (Kind::Float, Device::Cpu)), vec![0], "c");
    assert_user_error(count, |e| matches!(e, GibbonError::Mismatch(_)), &["3 images", "1 labels"]);
    let flat =
        Dataset::from_tensor(Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)), vec![0; 3], "f");
    assert_user_error(flat, is_invalid, &["4-D"]);
    let big = Dataset::from_tensor(
        Tensor::full([1, 1, 1, 1], 2.0, (Kind::Float, Device::Cpu)),
        vec![0],
        "b",
    );
    assert_user_error(big, is_invalid, &["[0, 1]"]);
    let nan = Dataset::from_tensor(
        Tensor::full([1, 1, 1, 1], f64::NAN, (Kind::Float, Device::Cpu)),
        vec![0],
        "n",
    );
    assert_user_error(nan, is_invalid, &["[0, 1]"]);
    let ints =
        Dataset::from_tensor(Tensor::zeros([1, 1, 1, 1], (Kind::Int64, Device::Cpu)), vec![0], "i");
    assert_user_error(ints, is_invalid, &["Int64"]);
    let negative = Dataset::from_tensor(
        Tensor::zeros([1, 1, 1, 1], (Kind::Uint8, Device::Cpu)),
        vec![-1],
        "l",
    );
    assert_user_error(negative, is_invalid, &["-1"]);
}
