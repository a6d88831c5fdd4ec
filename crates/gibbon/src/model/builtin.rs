//! Built-in architectures, built with `tch::nn` under PyTorch's parameter names so that a
//! PyTorch `state_dict` saved as safetensors loads directly.
use super::weights;
use super::{Classifier, ModelInfo};
use crate::error::{GibbonError, Result};
use std::cell::Cell;
use std::path::Path;
use std::str::FromStr;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

/// The architectures gibbon can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// One affine layer on the flattened input (`fc`).
    Linear,
    /// Flatten, fc1 (256) ReLU, fc2 (256) ReLU, fc3.
    Mlp,
    /// The TRADES MNIST CNN: conv32-conv32-maxpool-conv64-conv64-maxpool-fc200-fc200-fc10,
    /// 3×3 kernels, no padding (Zhang et al. 2019).
    SmallCnn,
    /// Pre-activation ResNet-18 for 32×32×3 inputs (He et al. 2016), as used by RobustBench.
    PreActResNet18,
}

impl Arch {
    /// Every architecture name accepted by `--arch`.
    pub const NAMES: &'static [&'static str] = &["linear", "mlp", "smallcnn", "preact-resnet18"];

    /// The `--arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Linear => "linear",
            Arch::Mlp => "mlp",
            Arch::SmallCnn => "smallcnn",
            Arch::PreActResNet18 => "preact-resnet18",
        }
    }

    /// The name of the classifier head's bias, whose length is the number of classes.
    pub fn head_bias(self) -> &'static str {
        match self {
            Arch::Linear => "fc.bias",
            Arch::Mlp | Arch::SmallCnn => "fc3.bias",
            Arch::PreActResNet18 => "linear.bias",
        }
    }

    /// The input shape the architecture requires, or `None` when it adapts to the data.
    pub fn fixed_input_shape(self) -> Option<Vec<i64>> {
        match self {
            Arch::SmallCnn => Some(vec![1, 28, 28]),
            Arch::PreActResNet18 => Some(vec![3, 32, 32]),
            Arch::Linear | Arch::Mlp => None,
        }
    }
}

impl FromStr for Arch {
    type Err = GibbonError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(Arch::Linear),
            "mlp" => Ok(Arch::Mlp),
            "smallcnn" | "small-cnn" => Ok(Arch::SmallCnn),
            "preact-resnet18" | "preactresnet18" | "resnet18" => Ok(Arch::PreActResNet18),
            _ => Err(GibbonError::invalid(
                "arch",
                format!("'{s}' is not one of {}", Arch::NAMES.join(", ")),
            )),
        }
    }
}

/// A built-in architecture with its weights in a [`nn::VarStore`].
pub struct BuiltinModel {
    arch: Arch,
    vs: nn::VarStore,
    /// Everything up to the penultimate activation (the feature layer).
    body: Box<dyn ModuleT>,
    /// The last layer: features to logits.
    head: Box<dyn ModuleT>,
    input_shape: Vec<i64>,
    classes: i64,
    train: Cell<bool>,
    info: ModelInfo,
}

impl std::fmt::Debug for BuiltinModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinModel")
            .field("arch", &self.arch)
            .field("input_shape", &self.input_shape)
            .field("classes", &self.classes)
            .finish()
    }
}

impl BuiltinModel {
    /// A freshly initialised model (PyTorch-style default initialisation from tch).
    pub fn new(arch: Arch, input_shape: &[i64], classes: i64, device: Device) -> Result<Self> {
        if let Some(fixed) = arch.fixed_input_shape() {
            if fixed != input_shape {
                return Err(GibbonError::Mismatch(format!(
                    "input shape {input_shape:?} does not fit the model: {} needs {fixed:?}",
                    arch.name()
                )));
            }
        }
        if classes < 2 {
            return Err(GibbonError::invalid("classes", format!("{classes}: need at least 2")));
        }
        let vs = nn::VarStore::new(device);
        let features: i64 = input_shape.iter().product();
        let root = vs.root();
        let (body, head): (Box<dyn ModuleT>, Box<dyn ModuleT>) = match arch {
            Arch::Linear => {
                let fc = nn::linear(&root / "fc", features, classes, Default::default());
                (Box::new(nn::func_t(|x, _| x.flatten(1, -1))), Box::new(fc))
            }
            Arch::Mlp => (
                Box::new(
                    nn::seq_t()
                        .add_fn(|x| x.flatten(1, -1))
                        .add(nn::linear(&root / "fc1", features, 256, Default::default()))
                        .add_fn(|x| x.relu())
                        .add(nn::linear(&root / "fc2", 256, 256, Default::default()))
                        .add_fn(|x| x.relu()),
                ),
                Box::new(nn::linear(&root / "fc3", 256, classes, Default::default())),
            ),
            Arch::SmallCnn => (
                Box::new(small_cnn_body(&root)),
                Box::new(nn::linear(&root / "fc3", 200, classes, Default::default())),
            ),
            Arch::PreActResNet18 => (
                Box::new(preact_resnet18_body(&root)),
                Box::new(nn::linear(&root / "linear", 512, classes, Default::default())),
            ),
        };
        let info = ModelInfo {
            path: format!("new:{}", arch.name()),
            sha256: String::new(),
            kind: "builtin".into(),
            arch: Some(arch.name().into()),
        };
        let model = BuiltinModel {
            arch,
            vs,
            body,
            head,
            input_shape: input_shape.to_vec(),
            classes,
            train: Cell::new(false),
            info,
        };
        model.check_forward()?;
        Ok(model)
    }

    /// Loads weights from a safetensors file with PyTorch names (see [`weights`]).
    pub fn load(
        arch: Arch,
        path: &Path,
        input_shape: &[i64],
        classes: i64,
        device: Device,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| GibbonError::io(path, e))?;
        Self::from_safetensors_bytes(
            arch,
            &bytes,
            &path.display().to_string(),
            input_shape,
            classes,
            device,
        )
    }

    /// Loads weights from safetensors bytes; `origin` names them in errors and provenance.
    pub fn from_safetensors_bytes(
        arch: Arch,
        bytes: &[u8],
        origin: &str,
        input_shape: &[i64],
        classes: i64,
        device: Device,
    ) -> Result<Self> {
        // The weights say how many classes the model has: a data slice whose labels do not
        // reach the last class (the first few test images) must not shrink the head. Fewer
        // classes in the weights than in the data stays an error (from `load_into`).
        let classes = weights::vector_len(bytes, arch.head_bias())
            .map_or(classes, |k| (k as i64).max(classes));
        let mut model = Self::new(arch, input_shape, classes, device)?;
        weights::load_into(&mut model.vs, bytes, origin)?;
        model.vs.freeze();
        model.info = ModelInfo {
            path: origin.to_string(),
            sha256: super::sha256_hex(bytes),
            kind: "safetensors".into(),
            arch: Some(arch.name().into()),
        };
        Ok(model)
    }

    fn check_forward(&self) -> Result<()> {
        let mut shape = vec![2];
        shape.extend(&self.input_shape);
        let x = Tensor::zeros(shape.as_slice(), (tch::Kind::Float, self.vs.device()));
        let out = tch::no_grad(|| self.head.forward_t(&self.body.forward_t(&x, false), false));
        if out.size() != [2, self.classes] {
            return Err(GibbonError::Internal(format!(
                "{} produced {:?}",
                self.arch.name(),
                out.size()
            )));
        }
        Ok(())
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The variables (for optimizers and saving).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable access to the variables.
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Switches between training (batch-norm statistics update) and inference behaviour.
    pub fn set_train(&self, train: bool) {
        self.train.set(train);
    }

    /// Marks the model's provenance (used after training).
    pub fn set_info(&mut self, info: ModelInfo) {
        self.info = info;
    }

    /// Saves the weights as safetensors with PyTorch names.
    pub fn save(&self, path: &Path) -> Result<()> {
        weights::save(&self.vs, path)
    }
}

impl Classifier for BuiltinModel {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let train = self.train.get();
        Ok(self.head.forward_t(&self.body.forward_t(self.checked(x)?, train), train))
    }
    fn features(&self, x: &Tensor, layer: Option<&str>) -> Result<Tensor> {
        match layer {
            None | Some(super::PENULTIMATE) => super::forward_tiled(x, super::TILE_ROWS, |t| {
                Ok(self.body.forward_t(self.checked(t)?, self.train.get()))
            }),
            Some(other) => {
                Err(super::unknown_feature_layer(self.info(), other, &[super::PENULTIMATE]))
            }
        }
    }
    fn input_shape(&self) -> &[i64] {
        &self.input_shape
    }
    fn num_classes(&self) -> i64 {
        self.classes
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn graph_scan(&self) -> super::GraphScan {
        // gibbon's own architectures are convolutions, linear layers, ReLU and pooling only.
        super::GraphScan::clean(format!("gibbon architecture {}", self.arch.name()))
    }
}

impl BuiltinModel {
    /// `x` when its shape fits the model, else a mismatch error.
    fn checked<'a>(&self, x: &'a Tensor) -> Result<&'a Tensor> {
        let size = x.size();
        if size.len() != self.input_shape.len() + 1 || size[1..] != self.input_shape[..] {
            return Err(GibbonError::Mismatch(format!(
                "input shape {:?} does not fit the model: {} expects [batch, {}]",
                &size[1.min(size.len())..],
                self.arch.name(),
                self.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(x)
    }
}

fn conv(
    p: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    padding: i64,
    bias: bool,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig { stride, padding, bias, ..Default::default() };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// SmallCNN up to its penultimate activation (ReLU after fc2, 200 values).
fn small_cnn_body(p: &nn::Path) -> nn::SequentialT {
    nn::seq_t()
        .add(conv(p / "conv1", 1, 32, 3, 1, 0, true))
        .add_fn(|x| x.relu())
        .add(conv(p / "conv2", 32, 32, 3, 1, 0, true))
        .add_fn(|x| x.relu())
        .add_fn(|x| x.max_pool2d_default(2))
        .add(conv(p / "conv3", 32, 64, 3, 1, 0, true))
        .add_fn(|x| x.relu())
        .add(conv(p / "conv4", 64, 64, 3, 1, 0, true))
        .add_fn(|x| x.relu())
        .add_fn(|x| x.max_pool2d_default(2))
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(p / "fc1", 1024, 200, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "fc2", 200, 200, Default::default()))
        .add_fn(|x| x.relu())
}

struct PreActBlock {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
}

impl PreActBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || cin != cout)
            .then(|| conv(&p / "shortcut" / "0", cin, cout, 1, stride, 0, false));
        PreActBlock {
            bn1: nn::batch_norm2d(&p / "bn1", cin, Default::default()),
            conv1: conv(&p / "conv1", cin, cout, 3, stride, 1, false),
            bn2: nn::batch_norm2d(&p / "bn2", cout, Default::default()),
            conv2: conv(&p / "conv2", cout, cout, 3, 1, 1, false),
            shortcut,
        }
    }
}

impl ModuleT for PreActBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x.apply_t(&self.bn1, train).relu();
        let shortcut = match &self.shortcut {
            Some(c) => out.apply(c),
            None => x.shallow_clone(),
        };
        let out = out.apply(&self.conv1).apply_t(&self.bn2, train).relu().apply(&self.conv2);
        out + shortcut
    }
}

impl std::fmt::Debug for PreActBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreActBlock")
    }
}

/// PreAct ResNet-18 up to its pooled 512 features.
fn preact_resnet18_body(p: &nn::Path) -> nn::SequentialT {
    let mut seq = nn::seq_t().add(conv(p / "conv1", 3, 64, 3, 1, 1, false));
    let mut cin = 64;
    for (layer, (cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
        let lp = p / format!("layer{}", layer + 1);
        for block in 0..2 {
            let s = if block == 0 { stride } else { 1 };
            seq = seq.add(PreActBlock::new(&lp / block.to_string(), cin, cout, s));
            cin = cout;
        }
    }
    let bn = nn::batch_norm2d(p / "bn", 512, Default::default());
    seq.add_fn_t(move |x, train| x.apply_t(&bn, train).relu())
        .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
}
