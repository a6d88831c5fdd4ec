//! Decoding an ONNX file into a graph of nodes over numbered value slots, with initializers as
//! libtorch tensors (weights never require grad) and nodes in topological order.
use super::proto;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};
use tch::{Kind, Tensor};

/// The operator-set versions of the default domain this interpreter implements.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Largest tensor (in elements) a file or an operator may create: a guard against files that
/// ask for absurd allocations.
pub const MAX_ELEMENTS: i64 = 1 << 27;

/// An attribute value, decoded.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read by `Debug` and by operators that need them
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Tensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    /// A kind this interpreter has no use for (graphs, sparse tensors, type protos), named.
    Other(&'static str),
}

/// One node: operator, name, input and output slots (`None` for an omitted optional input).
#[derive(Debug)]
pub struct Node {
    pub op_type: String,
    pub domain: String,
    pub name: String,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<Option<usize>>,
    pub attrs: BTreeMap<String, Attr>,
}

/// A graph input or output: name, element type and dimensions (`Err(name)` for a symbolic one).
#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: Option<Kind>,
    pub elem_type_name: String,
    pub dims: Option<Vec<Result<i64, String>>>,
}

impl ValueInfo {
    /// `[batch, 1, 28, 28]`-style text.
    pub fn shape_text(&self) -> String {
        match &self.dims {
            None => "unknown shape".into(),
            Some(d) => format!(
                "[{}]",
                d.iter()
                    .map(|v| match v {
                        Ok(n) => n.to_string(),
                        Err(s) => s.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A decoded ONNX graph, ready to evaluate.
#[derive(Debug)]
pub struct Graph {
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
    /// Number of value slots.
    pub slots: usize,
    /// The value name of every slot.
    pub slot_names: Vec<String>,
    /// Constant slots (initializers) and their tensors.
    pub constants: Vec<(usize, Tensor)>,
    /// Graph inputs that are not initializers, with their slots.
    pub inputs: Vec<(ValueInfo, usize)>,
    /// Graph outputs with their slots.
    pub outputs: Vec<(ValueInfo, usize)>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Number of initializer elements.
    pub parameters: i64,
}

/// Why a file could not be decoded (becomes a `GibbonError::Format`).
pub struct FormatError(pub String);

impl<T: Into<String>> From<T> for FormatError {
    fn from(s: T) -> Self {
        FormatError(s.into())
    }
}

type Res<T> = std::result::Result<T, FormatError>;

/// Maps an ONNX element type to a libtorch kind.
pub fn kind_of(data_type: i32) -> Option<Kind> {
    use proto::tensor_proto::DataType as D;
    Some(match D::try_from(data_type).ok()? {
        D::Float => Kind::Float,
        D::Double => Kind::Double,
        D::Float16 => Kind::Half,
        D::Bfloat16 => Kind::BFloat16,
        D::Int64 => Kind::Int64,
        D::Int32 => Kind::Int,
        D::Int16 => Kind::Int16,
        D::Int8 => Kind::Int8,
        D::Uint8 => Kind::Uint8,
        D::Bool => Kind::Bool,
        _ => return None,
    })
}

fn type_name(data_type: i32) -> String {
    proto::tensor_proto::DataType::try_from(data_type)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {data_type}"))
}

/// Decodes a `TensorProto` into a tensor; `base_dir` is where external data files live.
pub fn tensor_from_proto(t: &proto::TensorProto, base_dir: Option<&Path>) -> Res<Tensor> {
    let name = t.name.clone().unwrap_or_default();
    let data_type = t.data_type.unwrap_or(0);
    let kind = kind_of(data_type).ok_or_else(|| {
        format!("tensor '{name}': element type {} is not supported", type_name(data_type))
    })?;
    let mut numel: i64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("tensor '{name}': negative dimension {d}").into());
        }
        numel = numel
            .checked_mul(d)
            .filter(|n| *n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("tensor '{name}': too many elements ({:?})", t.dims))?;
    }
    let elt = kind.elt_size_in_bytes() as i64;
    let nbytes = (numel * elt) as usize;
    let external = t.data_location == Some(proto::tensor_proto::DataLocation::External as i32);
    let bytes: Vec<u8> = if external {
        read_external(t, &name, base_dir, nbytes)?
    } else if let Some(raw) = &t.raw_data {
        raw.clone()
    } else {
        typed_bytes(t, kind, numel as usize, &name)?
    };
    if bytes.len() != nbytes {
        return Err(format!(
            "tensor '{name}': {} bytes of data for shape {:?} of {} ({} bytes expected)",
            bytes.len(),
            t.dims,
            type_name(data_type),
            nbytes
        )
        .into());
    }
    let tensor = if nbytes == 0 {
        Tensor::f_zeros(t.dims.as_slice(), (kind, tch::Device::Cpu))
    } else {
        Tensor::f_from_data_size(&bytes, &t.dims, kind)
    }
    .map_err(|e| format!("tensor '{name}': {e}"))?;
    Ok(tensor)
}

fn typed_bytes(t: &proto::TensorProto, kind: Kind, numel: usize, name: &str) -> Res<Vec<u8>> {
    let check = |len: usize| -> Res<()> {
        if len == numel {
            Ok(())
        } else {
            Err(format!("tensor '{name}': {len} values for {numel} elements").into())
        }
    };
    Ok(match kind {
        Kind::Float => {
            check(t.float_data.len())?;
            t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Kind::Double => {
            check(t.double_data.len())?;
            t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Kind::Int64 => {
            check(t.int64_data.len())?;
            t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Kind::Int => {
            check(t.int32_data.len())?;
            t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Kind::Int16 | Kind::Half | Kind::BFloat16 => {
            check(t.int32_data.len())?;
            t.int32_data.iter().flat_map(|v| (*v as u16).to_le_bytes()).collect()
        }
        Kind::Int8 | Kind::Uint8 | Kind::Bool => {
            check(t.int32_data.len())?;
            t.int32_data.iter().map(|v| *v as u8).collect()
        }
        _ => return Err(format!("tensor '{name}': unsupported element type").into()),
    })
}

fn read_external(
    t: &proto::TensorProto,
    name: &str,
    base_dir: Option<&Path>,
    nbytes: usize,
) -> Res<Vec<u8>> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for entry in &t.external_data {
        let value = entry.value.clone().unwrap_or_default();
        let parse = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                FormatError(format!("tensor '{name}': bad external-data number '{v}'"))
            })
        };
        match entry.key.as_deref() {
            Some("location") => location = Some(value),
            Some("offset") => offset = parse(&value)?,
            Some("length") => length = Some(parse(&value)?),
            _ => {}
        }
    }
    let location =
        location.ok_or_else(|| format!("tensor '{name}': external data without a location"))?;
    let rel = Path::new(&location);
    if !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!(
            "tensor '{name}': external data location '{location}' must be a relative path inside the model's directory"
        )
        .into());
    }
    let base = base_dir.ok_or_else(|| {
        format!(
            "tensor '{name}': external data '{location}' but the model was not read from a file"
        )
    })?;
    let path = base.join(rel);
    let length = length.unwrap_or(nbytes as u64);
    if length != nbytes as u64 {
        return Err(format!(
            "tensor '{name}': external data length {length} but the shape needs {nbytes} bytes"
        )
        .into());
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&path).map_err(|e| {
        format!("tensor '{name}': cannot open external data {}: {e}", path.display())
    })?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("tensor '{name}': external data {}: {e}", path.display()))?;
    let mut bytes = vec![0u8; nbytes];
    file.read_exact(&mut bytes).map_err(|e| {
        format!(
            "tensor '{name}': external data {} has fewer than {} bytes at offset {offset}: {e}",
            path.display(),
            nbytes
        )
    })?;
    Ok(bytes)
}

fn decode_attr(a: &proto::AttributeProto, base_dir: Option<&Path>) -> Res<Attr> {
    use proto::attribute_proto::AttributeType as A;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // Older producers leave `type` unset; infer it from the field that is filled.
    let ty = match a.r#type.and_then(|t| A::try_from(t).ok()) {
        Some(t) if t != A::Undefined => t,
        _ => {
            if a.f.is_some() {
                A::Float
            } else if a.i.is_some() {
                A::Int
            } else if a.s.is_some() {
                A::String
            } else if a.t.is_some() {
                A::Tensor
            } else if !a.floats.is_empty() {
                A::Floats
            } else if !a.ints.is_empty() {
                A::Ints
            } else if !a.strings.is_empty() {
                A::Strings
            } else {
                A::Undefined
            }
        }
    };
    Ok(match ty {
        A::Float => Attr::Float(a.f.unwrap_or(0.0)),
        A::Int => Attr::Int(a.i.unwrap_or(0)),
        A::String => Attr::String(text(a.s.as_deref().unwrap_or_default())),
        A::Tensor => match &a.t {
            Some(t) => Attr::Tensor(tensor_from_proto(t, base_dir)?),
            None => return Err("tensor attribute without a tensor".into()),
        },
        A::Floats => Attr::Floats(a.floats.clone()),
        A::Ints => Attr::Ints(a.ints.clone()),
        A::Strings => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
        A::Graph | A::Graphs => Attr::Other("graph"),
        A::SparseTensor | A::SparseTensors => Attr::Other("sparse tensor"),
        A::TypeProto | A::TypeProtos => Attr::Other("type proto"),
        A::Tensors => Attr::Other("tensor list"),
        A::Undefined => Attr::Other("undefined"),
    })
}

fn value_info(v: &proto::ValueInfoProto) -> ValueInfo {
    let name = v.name.clone().unwrap_or_default();
    let mut info = ValueInfo { name, elem_type: None, elem_type_name: "?".into(), dims: None };
    if let Some(proto::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        if let Some(et) = t.elem_type {
            info.elem_type = kind_of(et);
            info.elem_type_name = type_name(et);
        }
        if let Some(shape) = &t.shape {
            use proto::tensor_shape_proto::dimension::Value as V;
            info.dims = Some(
                shape
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(V::DimValue(n)) => Ok(*n),
                        Some(V::DimParam(p)) => Err(p.clone()),
                        None => Err("?".into()),
                    })
                    .collect(),
            );
        }
    }
    info
}

/// Decodes the protobuf bytes of a model (no operator checks; see `unsupported`).
pub fn decode(bytes: &[u8], base_dir: Option<&Path>) -> Res<Graph> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| format!("not an ONNX model (protobuf decoding failed: {e})"))?;
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => opset = o.version,
            _ => {}
        }
    }
    let opset = opset.ok_or("the model imports no opset of the default ONNX domain")?;

    let mut slot_of: HashMap<String, usize> = HashMap::new();
    let mut slot_names: Vec<String> = Vec::new();
    let mut slot = |name: &str, names: &mut Vec<String>| -> usize {
        *slot_of.entry(name.to_string()).or_insert_with(|| {
            names.push(name.to_string());
            names.len() - 1
        })
    };

    let mut constants = Vec::new();
    let mut parameters: i64 = 0;
    let mut produced: Vec<bool> = Vec::new();
    let mark = |produced: &mut Vec<bool>, s: usize| {
        if produced.len() <= s {
            produced.resize(s + 1, false);
        }
        let was = produced[s];
        produced[s] = true;
        was
    };
    for init in &graph.initializer {
        let name = init.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err("an initializer has no name".into());
        }
        let tensor = tensor_from_proto(init, base_dir)?;
        parameters += tensor.numel() as i64;
        let s = slot(&name, &mut slot_names);
        if mark(&mut produced, s) {
            return Err(format!("initializer '{name}' is defined twice").into());
        }
        constants.push((s, tensor));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err("sparse initializers are not supported".into());
    }
    let mut inputs = Vec::new();
    for v in &graph.input {
        let info = value_info(v);
        if info.name.is_empty() {
            return Err("a graph input has no name".into());
        }
        let s = slot(&info.name, &mut slot_names);
        // Before IR version 4 initializers were also listed as inputs: those are not inputs.
        if produced.get(s).copied().unwrap_or(false) {
            continue;
        }
        mark(&mut produced, s);
        inputs.push((info, s));
    }

    // Nodes in file order, then a topological sort (the standard asks for sorted nodes, but
    // sorting costs nothing and accepts more files).
    let mut raw_nodes = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        let op_type = n.op_type.clone().unwrap_or_default();
        let name = n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| format!("#{i}"));
        if op_type.is_empty() {
            return Err(format!("node '{name}' has no operator type").into());
        }
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            let aname = a.name.clone().unwrap_or_default();
            let value = decode_attr(a, base_dir)
                .map_err(|e| format!("node '{name}' ({op_type}): attribute '{aname}': {}", e.0))?;
            attrs.insert(aname, value);
        }
        let ins: Vec<Option<usize>> = n
            .input
            .iter()
            .map(|s| if s.is_empty() { None } else { Some(slot(s, &mut slot_names)) })
            .collect();
        let outs: Vec<Option<usize>> = n
            .output
            .iter()
            .map(|s| if s.is_empty() { None } else { Some(slot(s, &mut slot_names)) })
            .collect();
        raw_nodes.push(Node {
            op_type,
            domain: n.domain.clone().unwrap_or_default(),
            name,
            inputs: ins,
            outputs: outs,
            attrs,
        });
    }
    let slots = slot_names.len();
    produced.resize(slots, false);
    let mut producer_of: Vec<Option<usize>> = vec![None; slots];
    for (i, n) in raw_nodes.iter().enumerate() {
        for s in n.outputs.iter().flatten() {
            if produced[*s] || producer_of[*s].is_some() {
                return Err(format!(
                    "node '{}' ({}) writes '{}', which is already defined",
                    n.name, n.op_type, slot_names[*s]
                )
                .into());
            }
            producer_of[*s] = Some(i);
        }
    }
    for n in &raw_nodes {
        for s in n.inputs.iter().flatten() {
            if !produced[*s] && producer_of[*s].is_none() {
                return Err(format!(
                    "node '{}' ({}) reads '{}', which no initializer, input or node defines",
                    n.name, n.op_type, slot_names[*s]
                )
                .into());
            }
        }
    }
    // Kahn's algorithm, stable in file order.
    let mut pending: Vec<usize> = raw_nodes
        .iter()
        .map(|n| n.inputs.iter().flatten().filter(|s| producer_of[**s].is_some()).count())
        .collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); slots];
    for (i, n) in raw_nodes.iter().enumerate() {
        for s in n.inputs.iter().flatten() {
            if producer_of[*s].is_some() {
                consumers[*s].push(i);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        pending.iter().enumerate().filter(|(_, p)| **p == 0).map(|(i, _)| i).collect();
    let mut order = Vec::with_capacity(raw_nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for s in raw_nodes[i].outputs.iter().flatten() {
            for &c in &consumers[*s] {
                pending[c] -= 1;
                if pending[c] == 0 {
                    ready.insert(c);
                }
            }
        }
    }
    if order.len() != raw_nodes.len() {
        return Err("the graph has a cycle".into());
    }
    let mut taken: Vec<Option<Node>> = raw_nodes.into_iter().map(Some).collect();
    let nodes: Vec<Node> = order.into_iter().filter_map(|i| taken[i].take()).collect();

    let mut outputs = Vec::new();
    for v in &graph.output {
        let info = value_info(v);
        let s = *slot_of
            .get(&info.name)
            .ok_or_else(|| format!("graph output '{}' is never computed", info.name))?;
        outputs.push((info, s));
    }
    if outputs.is_empty() {
        return Err("the graph has no outputs".into());
    }
    Ok(Graph {
        ir_version: model.ir_version.unwrap_or(0),
        opset,
        producer: format!(
            "{} {}",
            model.producer_name.clone().unwrap_or_default(),
            model.producer_version.clone().unwrap_or_default()
        )
        .trim()
        .to_string(),
        slots,
        slot_names,
        constants,
        inputs,
        outputs,
        nodes,
        parameters,
    })
}
