//! The typed values of the flags the library has no type for. Each `FromStr` error names the
//! flag and what it accepts; clap prints it as one line, `invalid value 'X' for '--flag'`, and
//! exits with code 2. Flags whose value is a library type (norm, knowledge, split, data, model,
//! arch, suite, output, schedule) use that type's own `FromStr`.
use gibbon::threat::TargetSelection;
use gibbon::GibbonError;
use std::convert::Infallible;
use std::str::FromStr;
use tch::Device;

/// `--eps`: one radius, or a comma list of radii for a robustness curve; each finite and ≥ 0.
#[derive(Debug, Clone, PartialEq)]
pub struct EpsList(pub Vec<f64>);

impl FromStr for EpsList {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        let radius = |v: &str| {
            let v = v.trim();
            let e: f64 = v
                .parse()
                .map_err(|_| GibbonError::invalid("eps", format!("'{v}' is not a number")))?;
            if !e.is_finite() || e < 0.0 {
                return Err(GibbonError::invalid("eps", format!("{e} must be finite and >= 0")));
            }
            Ok(e)
        };
        s.split(',').map(radius).collect::<Result<_, _>>().map(EpsList)
    }
}

/// `--attack`: the attack plan, one name or a comma list run in order (names are checked
/// against the registry by the library, which lists the known ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackPlan(pub Vec<String>);

impl FromStr for AttackPlan {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(AttackPlan(
            s.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        ))
    }
}

impl std::fmt::Display for AttackPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `--targeted`: how the target class is chosen: `next`, `most-likely`, `least-likely` or a
/// class number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetChoice(pub TargetSelection);

impl FromStr for TargetChoice {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        Ok(TargetChoice(match s {
            "next" => TargetSelection::NextClass,
            "most-likely" => TargetSelection::MostLikely,
            "least-likely" => TargetSelection::LeastLikely,
            n => TargetSelection::Fixed(n.parse().map_err(|_| {
                GibbonError::invalid(
                    "targeted",
                    format!("'{n}' is not next, most-likely, least-likely or a class number"),
                )
            })?),
        }))
    }
}

/// `--bpda [MODE]`: which non-differentiable pieces get a straight-through gradient. Only
/// `auto` exists: everything gibbon can swap (the input defenses' surrogates and an ONNX
/// model's Round, Floor, Ceil and Sign).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpdaMode {
    /// Swap everything gibbon can swap.
    Auto,
}

impl FromStr for BpdaMode {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        match s {
            "auto" => Ok(BpdaMode::Auto),
            other => Err(GibbonError::invalid("bpda", format!("'{other}' is not auto"))),
        }
    }
}

/// `--device`: `cpu`, `cuda` (the first CUDA device) or `cuda:N`; a CUDA device must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChoice(pub Device);

impl FromStr for DeviceChoice {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        let refuse = |message: String| GibbonError::invalid("device", message);
        match s {
            "cpu" => Ok(DeviceChoice(Device::Cpu)),
            "cuda" if tch::Cuda::is_available() => Ok(DeviceChoice(Device::Cuda(0))),
            "cuda" => Err(refuse("'cuda': no CUDA device is available to this libtorch".into())),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (n as i64) < tch::Cuda::device_count() => {
                    Ok(DeviceChoice(Device::Cuda(n)))
                }
                Some(n) => Err(refuse(format!(
                    "'cuda:{n}': only {} CUDA devices",
                    tch::Cuda::device_count()
                ))),
                None => Err(refuse(format!("'{other}' is not one of cpu, cuda, cuda:N"))),
            },
        }
    }
}

/// `--normalize`: per-channel mean and standard deviation, `MEAN/STD` with comma lists
/// (e.g. `0.1307/0.3081`); the lengths are checked against the model by the library.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Per-channel means.
    pub mean: Vec<f64>,
    /// Per-channel standard deviations.
    pub std: Vec<f64>,
}

impl FromStr for Normalization {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        let (mean, std) = s.split_once('/').ok_or_else(|| {
            GibbonError::invalid("normalize", format!("'{s}' must look like MEAN/STD"))
        })?;
        let list = |text: &str| -> Result<Vec<f64>, GibbonError> {
            text.split(',')
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|_| {
                        GibbonError::invalid("normalize", format!("'{v}' is not a number"))
                    })
                })
                .collect()
        };
        Ok(Normalization { mean: list(mean)?, std: list(std)? })
    }
}

/// `--optimizer`: `adam` or `sgd` (whose momentum is `--momentum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerName {
    /// Adam (Kingma & Ba 2015).
    Adam,
    /// SGD with momentum.
    Sgd,
}

impl FromStr for OptimizerName {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        match s {
            "adam" => Ok(OptimizerName::Adam),
            "sgd" => Ok(OptimizerName::Sgd),
            other => {
                Err(GibbonError::invalid("optimizer", format!("'{other}' is not adam or sgd")))
            }
        }
    }
}

/// `--surrogates` / `--targets`: a comma list of model specs, at least one (each spec is parsed
/// when its model is loaded, so that an error names its role and spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelList(pub Vec<String>);

impl FromStr for ModelList {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self, GibbonError> {
        let specs: Vec<String> =
            s.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if specs.is_empty() {
            return Err(GibbonError::invalid(
                "model list",
                format!("'{s}' names no model: give a comma list of model specs"),
            ));
        }
        Ok(ModelList(specs))
    }
}

/// The clap value parser of every flag with a `FromStr` type: clap already names the flag and
/// the value, so an invalid-argument error contributes only its message
/// (`invalid value 'l7' for '--norm <NORM>': 'l7' is not one of linf, l2, l1`).
pub fn parse_flag<T: FromStr<Err = GibbonError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e| match e {
        GibbonError::InvalidArgument { message, .. } => message,
        other => other.to_string(),
    })
}
