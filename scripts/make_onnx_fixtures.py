#!/usr/bin/env python3
"""Writes the ONNX operator fixtures in crates/gibbon/tests/fixtures/onnx/.

Each fixture is NAME.onnx plus NAME.npz holding `input` (float32), the expected outputs
`output_0`, `output_1`, ... and, for the torch-exported models, `grad_weight` and `grad` (the
gradient of sum(output_0 * grad_weight) with respect to the input).

* Operator graphs are built with the `onnx` helper API at an explicit opset; their expected
  outputs come from onnx's own reference evaluator (onnx.reference), independent of libtorch.
* The ResNet-style and transformer-style graphs are torch modules exported with
  torch.onnx.export(dynamo=False); outputs and input gradients come from eager torch (float64
  copies of the modules, rounded to float32), with a dynamic batch dimension.

Run (from the repository root; needs torch 2.13 and onnx, e.g. the gibbon venv after
`~/.cache/gibbon/venv/bin/pip install onnx`):

    ~/.cache/gibbon/venv/bin/python scripts/make_onnx_fixtures.py

The Rust tests (crates/gibbon/tests/onnx_import.rs) only read the files; they need no Python.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "gibbon", "tests", "fixtures", "onnx")
RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def ints(name, values):
    return init(name, np.asarray(values, dtype=np.int64))


def save(name, model, x, outputs, extra=None):
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name + ".onnx"))
    arrays = {"input": x}
    for i, o in enumerate(outputs):
        arrays[f"output_{i}"] = np.ascontiguousarray(o)
    arrays.update(extra or {})
    np.savez(os.path.join(OUT, name + ".npz"), **arrays)
    print(f"{name}: {os.path.getsize(os.path.join(OUT, name + '.onnx'))} B onnx", file=sys.stderr)


def op_graph(name, opset, nodes, x, output_names, inits=(), input_name="x", expected=None):
    """A graph with one float input `x`, evaluated by onnx's reference implementation (or, where
    that implementation is wrong, by `expected`, a function of the input computing the outputs)."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, F, ["batch"] + list(x.shape[1:]))],
        [helper.make_tensor_value_info(o, F, None) for o in output_names],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    outs = expected(x) if expected else ReferenceEvaluator(model).run(None, {input_name: x})
    # Declare the output shapes the reference computed (the checker wants a shape).
    del model.graph.output[:]
    model.graph.output.extend(
        [helper.make_tensor_value_info(o, F, list(v.shape)) for o, v in zip(output_names, outs)])
    save(name, model, x, outs)


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, name=f"{op}_{outs[0]}", **attrs)


def operator_fixtures():
    # Conv: groups, dilations, asymmetric pads, strides (opset 11) and SAME_UPPER (opset 17).
    x = rand(2, 4, 7, 6)
    op_graph("conv_groups_o11", 11, [node("Conv", ["x", "w", "b"], ["y"], group=2, dilations=[2, 1], pads=[1, 0, 0, 2], strides=[2, 1])],
             x, ["y"], [init("w", rand(6, 2, 3, 2)), init("b", rand(6))])
    op_graph("conv_same_o17", 17, [node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
             x, ["y"], [init("w", rand(3, 4, 3, 3))])
    # ConvTranspose: asymmetric pads, output_padding, bias; groups and dilations; output_shape.
    x = rand(2, 4, 4, 5)
    op_graph("convtranspose_o13", 13, [node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1])],
             x, ["y"], [init("w", rand(4, 3, 3, 3)), init("b", rand(3))])
    w = rand(4, 2, 2, 3)

    def grouped(x):  # onnx.reference 1.23 mishandles groups in ConvTranspose: use torch here.
        import torch
        y = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                                 stride=(1, 2), dilation=(2, 1), groups=2)
        return [y.float().numpy()]

    op_graph("convtranspose_groups_o18", 18, [node("ConvTranspose", ["x", "w"], ["y"], group=2, dilations=[2, 1], strides=[1, 2])],
             x, ["y"], [init("w", w)], expected=grouped)
    w2 = rand(4, 2, 2, 3)

    def output_shape(x):
        # onnx.reference 1.23 ignores the pads that output_shape implies: apply the spec's
        # formula (total = full - output_shape; SAME_UPPER puts the odd pixel at the end,
        # otherwise at the start) to torch's unpadded transposed convolution.
        import torch
        full = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).double(), torch.from_numpy(w2).double(), stride=2)
        z = full[:, :, 1:, 1:]  # output_shape [7, 10] of full [8, 11]: totals 1, 1 -> start pads
        u = full[:, :, :, :10]  # SAME_UPPER: target [8, 10]: totals 0, 1 -> end pad on W
        return [z.float().numpy(), u.float().numpy()]

    op_graph("convtranspose_outshape_o18", 18, [node("ConvTranspose", ["x", "w"], ["z"], strides=[2, 2], output_shape=[7, 10]),
                                                node("ConvTranspose", ["x", "w"], ["u"], strides=[2, 2], auto_pad="SAME_UPPER")],
             x, ["z", "u"], [init("w", w2)], expected=output_shape)
    # Gemm with transA, alpha, beta and a 2-D C; MatMul batched.
    x = rand(5, 3)
    op_graph("gemm_o13", 13, [node("Gemm", ["x", "w", "c"], ["y"], transA=1, alpha=0.5, beta=2.0),
                              node("Gemm", ["y", "w2", "b2"], ["z"], transB=1)],
             x, ["y", "z"], [init("w", rand(5, 4)), init("c", rand(1, 4)), init("w2", rand(2, 4)), init("b2", rand(2))])
    x = rand(2, 3, 4)
    op_graph("matmul_o13", 13, [node("MatMul", ["x", "w"], ["y"])], x, ["y"], [init("w", rand(4, 5))])
    # Elementwise and variadic operators.
    x = rand(3, 5)
    c, d = rand(5), rand(3, 1)
    nodes = [
        node("Add", ["x", "c"], ["add"]), node("Sub", ["x", "d"], ["sub"]), node("Mul", ["x", "c"], ["mul"]),
        node("Div", ["x", "two"], ["div"]), node("Neg", ["x"], ["neg"]), node("Relu", ["x"], ["relu"]),
        node("LeakyRelu", ["x"], ["leaky"], alpha=0.2), node("Sigmoid", ["x"], ["sig"]), node("Tanh", ["x"], ["tanh"]),
        node("Erf", ["x"], ["erf"]), node("Mul", ["x", "x"], ["sq"]), node("Add", ["sq", "one"], ["sq1"]),
        node("Sqrt", ["sq1"], ["sqrt"]), node("Pow", ["sq1", "p"], ["pow"]), node("Max", ["x", "c", "d"], ["max"]),
        node("Min", ["x", "c"], ["min"]),
    ]
    outs = ["add", "sub", "mul", "div", "neg", "relu", "leaky", "sig", "tanh", "erf", "sqrt", "pow", "max", "min"]
    op_graph("elementwise_o13", 13, nodes, x, outs,
             [init("c", c), init("d", d), init("two", np.float32(2.0)), init("one", np.float32(1.0)), init("p", np.float32(1.5))])
    # Clip: both bounds (opset 11); only the max, min omitted (opset 13).
    x = rand(4, 6)
    op_graph("clip_o11", 11, [node("Clip", ["x", "lo", "hi"], ["y"])], x, ["y"], [init("lo", np.float32(-0.5)), init("hi", np.float32(0.7))])
    op_graph("clip_o13", 13, [node("Clip", ["x", "", "hi"], ["y"])], x, ["y"], [init("hi", np.float32(0.3))])
    # Softmax / LogSoftmax: before opset 13 the input is coerced to 2-D at `axis`.
    x = rand(2, 3, 4)

    def coerced(x):  # onnx.reference 1.23 applies the opset-13 rule to Softmax-11: the spec's formula
        f = x.astype(np.float64).reshape(2, 12)  # axis 1 (also the default before opset 13)
        log = f - f.max(1, keepdims=True)
        log = log - np.log(np.exp(log).sum(1, keepdims=True))
        s, l = np.exp(log).reshape(x.shape).astype(np.float32), log.reshape(x.shape).astype(np.float32)
        return [s, l, s]

    for opset in (11, 13):
        op_graph(f"softmax_o{opset}", opset, [node("Softmax", ["x"], ["s"], axis=1), node("LogSoftmax", ["x"], ["l"], axis=1),
                                              node("Softmax", ["x"], ["d"])], x, ["s", "l", "d"],
                 expected=coerced if opset < 13 else None)
    # Pooling.
    x = rand(2, 3, 7, 8)
    op_graph("maxpool_o12", 12, [node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                                 node("MaxPool", ["x"], ["b"], kernel_shape=[2, 3], pads=[0, 1, 1, 0], dilations=[2, 1]),
                                 node("GlobalAveragePool", ["x"], ["g"])], x, ["a", "b", "g"])
    op_graph("avgpool_o11", 11, [node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                 node("AveragePool", ["x"], ["b"], kernel_shape=[2, 2], pads=[0, 1, 1, 0]),
                                 node("AveragePool", ["x"], ["c"], kernel_shape=[3, 2], pads=[1, 0, 1, 1], count_include_pad=1)],
             x, ["a", "b", "c"])
    op_graph("avgpool_o19", 19, [node("AveragePool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")], x, ["a"])
    # BatchNormalization (inference) before and after the opset-15 revision.
    x = rand(2, 3, 4, 4)
    bn = [init("s", rand(3)), init("bb", rand(3)), init("m", rand(3)), init("v", np.abs(rand(3)) + 0.5)]
    sc, sh, mean, var = (numpy_helper.to_array(t).astype(np.float64).reshape(1, 3, 1, 1) for t in bn)

    def batchnorm_eps_1e3(x):  # onnx.reference 1.23 gets BatchNormalization-9 wrong: the formula
        return [((x - mean) / np.sqrt(var + 1e-3) * sc + sh).astype(np.float32)]

    op_graph("batchnorm_o11", 11, [node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y"], epsilon=1e-3)], x, ["y"], bn,
             expected=batchnorm_eps_1e3)
    op_graph("batchnorm_o15", 15, [node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y"])], x, ["y"], bn)
    # Shape plumbing: Shape, Gather, Unsqueeze, Concat, Reshape, Flatten, Transpose, Squeeze.
    x = rand(2, 3, 1, 4)
    for opset in (11, 13, 21):
        axes_attr = {"axes": [0]} if opset < 13 else {}
        sq_attr = {"axes": [2]} if opset < 13 else {}
        nodes = [
            node("Shape", ["x"], ["shape"]), node("Gather", ["shape", "zero"], ["n"], axis=0),
            node("Unsqueeze", ["n"] + ([] if opset < 13 else ["axes0"]), ["n1"], **axes_attr),
            node("Concat", ["n1", "minus1"], ["target"], axis=0), node("Reshape", ["x", "target"], ["flat"]),
            node("Flatten", ["x"], ["f2"], axis=2), node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
            node("Squeeze", ["x"] + ([] if opset < 13 else ["axes2"]), ["sq"], **sq_attr),
            node("Transpose", ["sq"], ["tr"]),
        ]
        op_graph(f"shape_ops_o{opset}", opset, nodes, x, ["flat", "f2", "t", "sq", "tr"],
                 [ints("zero", 0), ints("minus1", [-1]), ints("axes0", [0]), ints("axes2", [2])])
    # Slice with negative indices, clamping, steps (positive and negative), axes.
    x = rand(3, 6, 5)
    op_graph("slice_o13", 13, [node("Slice", ["x", "s1", "e1", "a1", "st1"], ["a"]),
                               node("Slice", ["x", "s2", "e2", "a2", "st2"], ["b"]),
                               node("Slice", ["x", "s3", "e3"], ["c"])], x, ["a", "b", "c"],
             [ints("s1", [1, -1]), ints("e1", [1000, -6]), ints("a1", [1, 2]), ints("st1", [2, -2]),
              ints("s2", [-100, 4]), ints("e2", [-1, -1000]), ints("a2", [2, 1]), ints("st2", [1, -1]),
              ints("s3", [0, 1]), ints("e3", [-1, 3])])
    # Gather: 2-D indices with negative entries, axis 1; scalar index, axis 0.
    x = rand(2, 5, 3)
    op_graph("gather_o13", 13, [node("Gather", ["x", "i"], ["a"], axis=1), node("Gather", ["x", "k"], ["b"])], x, ["a", "b"],
             [ints("i", [[0, -1], [3, 1], [4, -5]]), ints("k", -1)])
    # Constant, ConstantOfShape, Identity, Dropout (inference, with a mask output).
    x = rand(2, 4)
    op_graph("constant_o13", 13, [
        node("Constant", [], ["cf"], value_floats=[0.5, -1.0, 2.0, 0.25]), node("Mul", ["x", "cf"], ["a"]),
        node("Constant", [], ["shape"], value=helper.make_tensor("v", TensorProto.INT64, [2], [2, 4])),
        node("ConstantOfShape", ["shape"], ["fill"], value=helper.make_tensor("v", F, [1], [0.75])),
        node("Add", ["a", "fill"], ["b"]), node("Identity", ["b"], ["c"]), node("Dropout", ["c"], ["d", "mask"]),
        node("Constant", [], ["k"], value_float=3.0), node("Mul", ["d", "k"], ["e"]),
    ], x, ["e"])
    # Pad: constant (with a value), reflect, edge; opset 18 with the axes input.
    x = rand(1, 2, 4, 5)
    op_graph("pad_o13", 13, [node("Pad", ["x", "p1", "v"], ["a"]), node("Pad", ["x", "p2"], ["b"], mode="reflect"),
                             node("Pad", ["x", "p2"], ["c"], mode="edge")], x, ["a", "b", "c"],
             [ints("p1", [0, 1, 2, 0, 1, 0, 1, 3]), init("v", np.float32(-2.0)), ints("p2", [0, 0, 2, 1, 0, 0, 1, 3])])
    op_graph("pad_o18", 18, [node("Pad", ["x", "p", "", "ax"], ["a"])], x, ["a"], [ints("p", [1, 2, 0, 3]), ints("ax", [-1, 1])])
    # ReduceSum / ReduceMean: axes as attribute (11), ReduceSum input (13), both inputs (18).
    x = rand(2, 3, 4)
    op_graph("reduce_o11", 11, [node("ReduceSum", ["x"], ["a"], axes=[1]), node("ReduceMean", ["x"], ["b"], axes=[-1, 0], keepdims=0),
                                node("ReduceMean", ["x"], ["c"])], x, ["a", "b", "c"])
    op_graph("reduce_o13", 13, [node("ReduceSum", ["x", "ax"], ["a"], keepdims=0), node("ReduceMean", ["x"], ["b"], axes=[2]),
                                node("ReduceSum", ["x"], ["c"])], x, ["a", "b", "c"], [ints("ax", [0, 2])])
    op_graph("reduce_o18", 18, [node("ReduceSum", ["x", "ax"], ["a"]), node("ReduceMean", ["x", "ax"], ["b"], keepdims=0),
                                node("ReduceMean", ["x", "empty"], ["c"], noop_with_empty_axes=1)], x, ["a", "b", "c"],
             [ints("ax", [1]), ints("empty", np.zeros(0, dtype=np.int64))])
    # LayerNormalization (17) and Gelu (20).
    x = rand(2, 3, 6)
    op_graph("layernorm_o17", 17, [node("LayerNormalization", ["x", "s", "b"], ["a"]),
                                   node("LayerNormalization", ["x", "s2"], ["c"], axis=1, epsilon=1e-3)], x, ["a", "c"],
             [init("s", rand(6)), init("b", rand(6)), init("s2", rand(3, 6))])
    op_graph("gelu_o20", 20, [node("Gelu", ["x"], ["a"]), node("Gelu", ["x"], ["b"], approximate="tanh")], x, ["a", "b"])
    # Not supported, for the error tests: a real operator gibbon does not implement.
    graph = helper.make_graph([node("Hardmax", ["x"], ["y"])], "unsupported", [helper.make_tensor_value_info("x", F, ["batch", 4])],
                              [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, os.path.join(OUT, "unsupported_hardmax_o13.onnx"))
    # An opset outside 11..21.
    graph = helper.make_graph([node("Relu", ["x"], ["y"])], "opset22", [helper.make_tensor_value_info("x", F, ["batch", 4])],
                              [helper.make_tensor_value_info("y", F, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    onnx.save(model, os.path.join(OUT, "unsupported_opset22.onnx"))
    # Initializers in an external data file (a small linear classifier, 6 features, 4 classes).
    x = rand(3, 6)
    graph = helper.make_graph([node("Gemm", ["x", "w", "b"], ["logits"], transB=1)], "external",
                              [helper.make_tensor_value_info("x", F, ["batch", 6])],
                              [helper.make_tensor_value_info("logits", F, ["batch", 4])],
                              initializer=[init("w", rand(4, 6)), init("b", rand(4))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    outs = ReferenceEvaluator(model).run(None, {"x": x})
    onnx.save_model(model, os.path.join(OUT, "external_data_o13.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="external_data_o13.weights", size_threshold=0)
    np.savez(os.path.join(OUT, "external_data_o13.npz"), input=x, output_0=outs[0])


def torch_fixtures():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(x + self.bn2(self.conv2(y)))

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.bn = nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)
            self.block = Block(4)
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.stem(x)))
            x = self.block(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.head(x)

    class TinyTransformer(nn.Module):
        """Input [B, 1, 6, 8] read as 6 tokens of width 8: one pre-norm attention block, a GELU MLP."""

        def __init__(self, d=8):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            self.head = nn.Linear(d, 10)
            self.d = d

        def forward(self, x):
            t = x.flatten(1, 2)  # [B, 6, 8]
            q, k, v = self.qkv(self.ln1(t)).split(self.d, dim=-1)
            att = torch.softmax(torch.matmul(q, k.transpose(1, 2)) / self.d ** 0.5, dim=-1)
            t = t + self.proj(torch.matmul(att, v))
            t = t + self.fc2(nn.functional.gelu(self.fc1(self.ln2(t))))
            return self.head(t.mean(dim=1))

    def randomize_bn(m):
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.3, 0.3)

    for name, module, shape, opset in [
        ("resnet_o17", TinyResNet(), (3, 1, 8, 8), 17),
        ("transformer_o17", TinyTransformer(), (3, 1, 6, 8), 17),
        ("transformer_o20", TinyTransformer(), (3, 1, 6, 8), 20),
    ]:
        randomize_bn(module)
        module.eval()
        x = torch.rand(shape)
        path = os.path.join(OUT, name + ".onnx")
        torch.onnx.export(module, (x,), path, dynamo=False, opset_version=opset, do_constant_folding=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        # Expected values in float64 (the exported weights are float32, so cast a copy).
        m64 = module.double()
        x64 = x.double().requires_grad_(True)
        out = m64(x64)
        gw = torch.randn(out.shape, dtype=torch.float64)
        (grad,) = torch.autograd.grad((out * gw).sum(), x64)
        module.float()
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        print(f"{name}: ops {ops}", file=sys.stderr)
        np.savez(os.path.join(OUT, name + ".npz"), input=x.numpy(), output_0=out.detach().float().numpy(),
                 grad_weight=gw.float().numpy(), grad=grad.float().numpy())


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    operator_fixtures()
    torch_fixtures()
