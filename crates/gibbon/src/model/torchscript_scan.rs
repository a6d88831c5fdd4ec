//! The graph scan of a TorchScript archive (see [`super::scan`]).
//!
//! A TorchScript file is a zip archive whose `code/` records hold the module's forward code as
//! Python-like text (`code/__torch__.py` for scripted modules, `code/__torch__/___torch_mangle_N.py`
//! for traced ones, one record per submodule class and per helper module such as
//! `torch/nn/functional.py`). The scan reads those records (never the `.debug_pkl` ones), splits
//! them into functions and methods, keeps those reachable from some module's `forward`, and
//! flags every call of an operator whose input gradient is zero (`torch.round`, `floor`, `sign`,
//! `argmax`, quantization), cut (`torch.detach`, `.detach()`) or random (`randn_like`,
//! `bernoulli`, ...). Reachability matters for helper modules: `functional.py` may define
//! functions that the model never calls.
//!
//! `fake_quantize_per_tensor_affine` is not flagged: its backward pass is already
//! straight-through (the identity inside the quantization range). The scan reads code, not
//! data flow: a flagged call in a reachable function may in rare cases act on a tensor off the
//! input path (a buffer), which the audit's gradient checks then tell apart.
//!
//! The out-of-place piecewise-constant ops (`round`, `floor`, `ceil`, `trunc`, `fix`, `sign`)
//! and `detach` have a surrogate: gibbon's BPDA view rewrites them in the graph
//! ([`super::torchscript_bpda`]). The others (in-place variants, `argmax`, quantization) have
//! none: gradient attacks stay masked there, and the audit falls back to gradient-free attacks.
use super::scan::{FlaggedOp, GraphScan, OpEffect};
use std::io::Read;
use std::ops::Range;

/// The surrogate of the ops the TorchScript rewrite swaps.
pub const REWRITE_SURROGATE: &str = "identity (straight-through, TorchScript graph rewrite)";

/// The ops (`aten::NAME`) that [`super::torchscript_bpda`] rewrites.
pub fn rewritable(op: &str) -> bool {
    matches!(
        op,
        "aten::round"
            | "aten::floor"
            | "aten::ceil"
            | "aten::trunc"
            | "aten::fix"
            | "aten::sign"
            | "aten::detach"
    )
}

/// At most this many bytes of code are read from one archive (a guard against zip bombs).
const MAX_CODE_BYTES: u64 = 64 << 20;

/// Why an archive's code could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodeReadError {
    /// Not a readable zip archive, or a record is corrupt.
    #[error("not a readable zip archive ({0})")]
    Zip(#[from] zip::result::ZipError),
    /// A code record could not be decompressed or is not UTF-8.
    #[error("code record {record} is unreadable ({why})")]
    Record {
        /// The record's name in the archive.
        record: String,
        /// What went wrong.
        why: String,
    },
    /// The code records are larger than the limit (64 MiB), a guard against zip bombs.
    #[error("the code records exceed {} MiB", MAX_CODE_BYTES >> 20)]
    TooLarge,
    /// The archive has no `code/*.py` record.
    #[error("no code records (code/*.py) in the archive")]
    NoCode,
}

/// Operators whose input gradient is useless, as TorchScript code names them.
const FLAGGED: &[(&str, OpEffect)] = &[
    ("round", OpEffect::ZeroGradient),
    ("floor", OpEffect::ZeroGradient),
    ("ceil", OpEffect::ZeroGradient),
    ("sign", OpEffect::ZeroGradient),
    ("trunc", OpEffect::ZeroGradient),
    ("fix", OpEffect::ZeroGradient),
    ("argmax", OpEffect::ZeroGradient),
    ("argmin", OpEffect::ZeroGradient),
    ("quantize_per_tensor", OpEffect::ZeroGradient),
    ("quantize_per_channel", OpEffect::ZeroGradient),
    ("detach", OpEffect::Detached),
    ("randn_like", OpEffect::Random),
    ("rand_like", OpEffect::Random),
    ("randint_like", OpEffect::Random),
    ("randn", OpEffect::Random),
    ("rand", OpEffect::Random),
    ("randint", OpEffect::Random),
    ("randperm", OpEffect::Random),
    ("bernoulli", OpEffect::Random),
    ("normal", OpEffect::Random),
    ("multinomial", OpEffect::Random),
    ("poisson", OpEffect::Random),
];

/// One code record: its name in the archive, the dotted module path its free functions are
/// called by (`__torch__.torch.nn.functional`), and its lines.
struct CodeFile {
    record: String,
    module: String,
    lines: Vec<String>,
}

/// A function (`def` at the top level of a record) or a method (`def` inside a `class`).
struct Unit {
    file: usize,
    /// Free functions: the qualified name code calls them by; methods: `None`.
    qualified: Option<String>,
    name: String,
    /// Line indices, the `def` line first.
    lines: Range<usize>,
}

/// Scans the TorchScript archive `bytes`; an unreadable archive is an opaque scan saying why.
pub fn scan_archive(bytes: &[u8]) -> GraphScan {
    match read_code(bytes) {
        Ok(files) => scan_files(&files),
        Err(e) => GraphScan::opaque(format!("torchscript archive: {e}")),
    }
}

/// The `code/**.py` records of the archive, in archive order.
fn read_code(bytes: &[u8]) -> Result<Vec<CodeFile>, CodeReadError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let record = entry.name().to_string();
        let Some(module) = module_path(&record) else { continue };
        total = total.saturating_add(entry.size());
        if total > MAX_CODE_BYTES {
            return Err(CodeReadError::TooLarge);
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_CODE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| CodeReadError::Record { record: record.clone(), why: e.to_string() })?;
        let lines = text.lines().map(str::to_string).collect();
        files.push(CodeFile { record, module, lines });
    }
    if files.is_empty() {
        return Err(CodeReadError::NoCode);
    }
    Ok(files)
}

/// `ARCHIVE/code/__torch__/torch/nn/functional.py` -> `__torch__.torch.nn.functional`; `None`
/// for records that are not code (`.debug_pkl`, data, constants).
fn module_path(record: &str) -> Option<String> {
    // `ARCHIVE/code/...` (what torch writes) or `code/...`; never a `code/` deeper down.
    let rest = match record.split_once('/')? {
        ("code", rest) => rest,
        (_, tail) => tail.strip_prefix("code/")?,
    };
    let stem = rest.strip_suffix(".py")?;
    (!stem.is_empty()).then(|| stem.replace('/', "."))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The functions and methods of `file` (index `index`).
fn units_of(index: usize, file: &CodeFile) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut i = 0;
    while i < file.lines.len() {
        let line = &file.lines[i];
        let Some(name) = line.trim_start().strip_prefix("def ").and_then(|r| r.split('(').next())
        else {
            i += 1;
            continue;
        };
        let depth = indent(line);
        let mut end = i + 1;
        while end < file.lines.len() {
            let next = &file.lines[end];
            if !next.trim().is_empty() && indent(next) <= depth {
                break;
            }
            end += 1;
        }
        let qualified = (depth == 0).then(|| format!("{}.{}", file.module, name.trim()));
        units.push(Unit { file: index, qualified, name: name.trim().to_string(), lines: i..end });
        i = end;
    }
    units
}

/// True when `text` calls or names `name` as a whole identifier (the next character is not
/// part of an identifier).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(p, _)| {
        let after = text[p + name.len()..].chars().next();
        let before = text[..p].chars().next_back();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Which units are reachable from a module's `forward`: every `forward` method, then every
/// free function named (by its qualified name) and every method called (`.name(`) from a
/// reachable unit. Without any `forward`, everything counts as reachable.
fn reachable(files: &[CodeFile], units: &[Unit]) -> Vec<bool> {
    let mut reach: Vec<bool> =
        units.iter().map(|u| u.qualified.is_none() && u.name == "forward").collect();
    if !reach.iter().any(|r| *r) {
        return vec![true; units.len()];
    }
    let body = |u: &Unit| files[u.file].lines[u.lines.clone()].join("\n");
    let mut frontier: Vec<usize> = (0..units.len()).filter(|i| reach[*i]).collect();
    while let Some(i) = frontier.pop() {
        let text = body(&units[i]);
        for (j, u) in units.iter().enumerate() {
            if reach[j] {
                continue;
            }
            let called = match &u.qualified {
                Some(q) => mentions(&text, q),
                None => text.contains(&format!(".{}(", u.name)),
            };
            if called {
                reach[j] = true;
                frontier.push(j);
            }
        }
    }
    reach
}

/// `line` without the contents of its string literals (so messages are not read as code).
fn strip_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// The flagged operator calls on one line of code: `torch.OP(`, `torch.OP_(` (in place),
/// `x.OP(` (a tensor method), as (`aten::OP` or `aten::OP_`, effect). Calls of `math.OP` (on
/// Python scalars) and of gibbon-unknown `__torch__` functions that share a name are not ops.
fn flagged_calls(line: &str) -> Vec<(String, OpEffect)> {
    let code = strip_strings(line);
    let mut found = Vec::new();
    for (p, _) in code.match_indices('.') {
        let rest = &code[p + 1..];
        let before = &code[..p];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let receiver = &before[start..];
        if receiver == "math" || receiver.starts_with("__torch__") {
            continue;
        }
        for (name, effect) in FLAGGED {
            let Some(tail) = rest.strip_prefix(name) else { continue };
            if tail.starts_with('(') {
                found.push((format!("aten::{name}"), *effect));
            } else if tail.starts_with("_(") {
                found.push((format!("aten::{name}_"), *effect));
            }
        }
    }
    found
}

/// The scan of the code records `files`.
fn scan_files(files: &[CodeFile]) -> GraphScan {
    let units: Vec<Unit> = files.iter().enumerate().flat_map(|(i, f)| units_of(i, f)).collect();
    let reach = reachable(files, &units);
    let mut ranges: Vec<(usize, Range<usize>)> = units
        .iter()
        .zip(&reach)
        .filter(|(_, r)| **r)
        .map(|(u, _)| (u.file, u.lines.clone()))
        .collect();
    if units.is_empty() {
        ranges = files.iter().enumerate().map(|(i, f)| (i, 0..f.lines.len())).collect();
    }
    ranges.sort_by_key(|(f, r)| (*f, r.start));
    let mut ops = Vec::new();
    for (f, lines) in &ranges {
        let file = &files[*f];
        for n in lines.clone() {
            for (op, effect) in flagged_calls(&file.lines[n]) {
                ops.push(FlaggedOp {
                    effect,
                    location: format!("{}:{}", file.record, n + 1),
                    surrogate: rewritable(&op).then(|| REWRITE_SURROGATE.to_string()),
                    op,
                    swapped: false,
                });
            }
        }
    }
    let reached = reach.iter().filter(|r| **r).count();
    GraphScan {
        source: format!(
            "torchscript code ({} files, {reached} of {} functions reachable from forward)",
            files.len(),
            units.len()
        ),
        inspected: true,
        ops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(record: &str, code: &str) -> CodeFile {
        CodeFile {
            record: record.into(),
            module: module_path(record).unwrap(),
            lines: code.lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn calls_are_matched_as_whole_identifiers() {
        let ops = |l: &str| flagged_calls(l).into_iter().map(|(o, _)| o).collect::<Vec<_>>();
        assert_eq!(ops("    q = torch.div(torch.round(torch.mul(x, 7.)), 7.)"), ["aten::round"]);
        assert_eq!(ops("    y = torch.round_(x)"), ["aten::round_"]);
        assert_eq!(ops("    z = (x).detach()"), ["aten::detach"]);
        assert!(ops("    b = torch.signbit(x)").is_empty());
        assert!(ops("    b = torch.floor_divide(x, 2)").is_empty());
        // Fake quantization's backward is already straight-through: not masking.
        assert!(ops("    q = torch.fake_quantize_per_tensor_affine(x, 0.1, 0, 0, 255)").is_empty());
        assert_eq!(
            ops("    q = torch.quantize_per_tensor(x, 0.1, 0, 13)"),
            ["aten::quantize_per_tensor"]
        );
        assert_eq!(ops("    s = torch.ops.aten.sign(x)"), ["aten::sign"]);
        assert!(ops("    y = __torch__.helpers.round(x)").is_empty());
        assert!(ops("    n = math.floor(h)").is_empty());
        assert!(ops("    ops.prim.RaiseException(\"torch.round(x) failed\")").is_empty());
        assert_eq!(
            ops("    e = torch.randn(s) + torch.rand_like(x)"),
            ["aten::randn", "aten::rand_like"]
        );
    }

    #[test]
    fn helper_functions_count_only_when_called_from_forward() {
        let main = file(
            "m/code/__torch__.py",
            "class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    return __torch__.torch.nn.functional.relu(x, False, )\n",
        );
        let helpers = file(
            "m/code/__torch__/torch/nn/functional.py",
            "def relu(input: Tensor,\n    inplace: bool=False) -> Tensor:\n  return torch.relu(input)\ndef relu6(input: Tensor) -> Tensor:\n  return torch.sign(input)\ndef other(input: Tensor) -> Tensor:\n  return torch.argmax(input)\n",
        );
        let scan = scan_files(&[main, helpers]);
        assert!(scan.inspected && scan.ops.is_empty(), "{scan:?}");
        let main = file(
            "m/code/__torch__.py",
            "class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    _0 = __torch__.torch.nn.functional.other\n    return _0(x)\n",
        );
        let helpers = file(
            "m/code/__torch__/torch/nn/functional.py",
            "def other(input: Tensor) -> Tensor:\n  return torch.argmax(input)\n",
        );
        let scan = scan_files(&[main, helpers]);
        assert_eq!(scan.ops.len(), 1, "{scan:?}");
        assert_eq!(scan.ops[0].op, "aten::argmax");
        assert_eq!(scan.ops[0].location, "m/code/__torch__/torch/nn/functional.py:2");
    }

    #[test]
    fn only_code_records_are_read() {
        assert_eq!(module_path("m/code/__torch__.py").as_deref(), Some("__torch__"));
        assert_eq!(
            module_path("m/code/__torch__/torch/nn/functional.py").as_deref(),
            Some("__torch__.torch.nn.functional")
        );
        assert_eq!(module_path("code/__torch__/data/x.py").as_deref(), Some("__torch__.data.x"));
        assert_eq!(module_path("m/code/__torch__.py.debug_pkl"), None);
        assert_eq!(module_path("m/data/0"), None);
        assert_eq!(module_path("m/extra/code/x.py"), None);
    }

    #[test]
    fn garbage_is_an_opaque_scan() {
        for bytes in [&b""[..], b"PK\x03\x04 truncated", b"not a zip at all"] {
            let scan = scan_archive(bytes);
            assert!(!scan.inspected && scan.ops.is_empty(), "{scan:?}");
        }
    }
}
