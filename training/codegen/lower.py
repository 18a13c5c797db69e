"""Each TFLite operator becomes one kernel call with its parameters computed here (or an alias, for the
operators that only rename a buffer: RESHAPE, EXPAND_DIMS, SQUEEZE). Anything else is an
``UnsupportedModel`` error that names the operator, its index and what to do."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.codegen import quant
from training.codegen.reader import Graph, Operator, Tensor

ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
             "CONCATENATION", "SOFTMAX", "QUANTIZE", "ADD") + ALIAS_OPS
PADDING = {0: "SAME", 1: "VALID"}


class UnsupportedModel(ValueError):
    """The model uses an operator, type or option the firmware kernels do not implement."""


@dataclass
class ConstArray:
    suffix: str          # C name suffix, unique per step
    ctype: str           # int8_t, int32_t
    values: np.ndarray


@dataclass
class Step:
    op: Operator
    kernel: str                       # C function, e.g. pw_conv2d_s8
    struct_type: str                  # C parameter struct
    fields: dict[str, str]            # designated initializers (C text)
    consts: list[ConstArray] = field(default_factory=list)
    # call arguments after the params pointer: ("in", tensor), ("const", suffix), ("null", ""),
    # ("lit", C text), ("ins", [tensors]) for CONCATENATION, ("out", tensor)
    args: list[tuple[str, object]] = field(default_factory=list)
    macs: int = 0


def _fail(op: Operator, what: str, fix: str) -> UnsupportedModel:
    return UnsupportedModel(f"op {op.index} {op.name}: {what}. {fix}")


def _int8(op: Operator, t: Tensor, role: str) -> None:
    if t.dtype != np.int8:
        raise _fail(op, f"{role} tensor {t.name!r} is {np.dtype(t.dtype).name}, the kernels are int8 only",
                    "Export a full-integer int8 model (training/export.py, quantization 'int8').")
    if t.scale.size == 0:
        raise _fail(op, f"{role} tensor {t.name!r} has no quantization parameters", "Re-export as int8.")


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0]) if t.zero_point.size else 0


def _act(op: Operator, out: Tensor) -> tuple[int, int]:
    a = int(op.options.get("fusedActivationFunction", 0))
    try:
        return quant.activation_range(a, float(out.scale[0]), _zp(out))
    except ValueError:
        raise _fail(op, f"fused activation {quant.ACT_NAMES.get(a, a)} is not supported (NONE, RELU, RELU6, "
                    "RELU_N1_TO_1 are)", "Use ReLU/ReLU6 or no activation in that layer.") from None


def _requant(mult: list[int], shift: list[int]) -> tuple[list[ConstArray], str]:
    consts = [ConstArray("mult", "int32_t", np.asarray(mult, np.int64)),
              ConstArray("shift", "int8_t", np.asarray(shift, np.int64))]
    return consts, "{@MULT, @SHIFT, " + str(len(mult)) + "}"


def _bias(op: Operator, g: Graph, idx: int, n: int) -> tuple[list[ConstArray], tuple[str, object]]:
    if idx < 0:
        return [], ("null", "")
    b = g.tensors[idx]
    if b.data is None or b.dtype != np.int32:
        raise _fail(op, f"bias {b.name!r} is not a constant int32 tensor", "Re-export as int8 (int32 biases).")
    if b.size != n:
        raise _fail(op, f"bias has {b.size} values for {n} output channels", "The model is malformed.")
    return [ConstArray("bias", "int32_t", b.data.astype(np.int64).ravel())], ("const", "bias")


def _nhwc(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(shape)
    return shape  # type: ignore[return-value]


def _conv(op: Operator, g: Graph, depthwise: bool) -> Step:
    x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    for t, role in ((x, "input"), (w, "filter"), (y, "output")):
        _int8(op, t, role)
    if w.data is None:
        raise _fail(op, "the filter is not a constant", "Only constant weights are supported.")
    if len(x.shape) != 4 or len(y.shape) != 4 or len(w.shape) != 4:
        raise _fail(op, f"shapes {x.shape}, {w.shape} -> {y.shape} are not 4-D NHWC", "The model is malformed.")
    n, ih, iw, ic = x.shape
    _, oh, ow, oc = y.shape
    kh, kw = w.shape[1], w.shape[2]
    if np.any(w.zero_point != 0):
        raise _fail(op, "the filter has non-zero zero points", "int8 TFLite filters are symmetric; re-export.")
    sh, sw = int(op.options["strideH"]), int(op.options["strideW"])
    dh, dw = int(op.options.get("dilationHFactor", 1)), int(op.options.get("dilationWFactor", 1))
    if int(op.options.get("padding", 0)) not in PADDING:
        raise _fail(op, f"padding {op.options.get('padding')} unknown", "Use 'same' or 'valid' padding.")
    terms = kh * kw * (1 if depthwise else ic)
    if terms > 65000:
        raise _fail(op, f"{terms} accumulator terms could overflow int32", "Use a smaller kernel.")
    in_scale, out_scale = float(x.scale[0]), float(y.scale[0])
    if w.scale.size not in (1, oc):
        raise _fail(op, f"{w.scale.size} filter scales for {oc} channels", "The model is malformed.")
    mult, shift = quant.per_channel_multipliers(in_scale, w.scale, out_scale, oc)
    act_min, act_max = _act(op, y)
    consts, rq = _requant(mult, shift)
    bconsts, barg = _bias(op, g, op.inputs[2] if len(op.inputs) > 2 else -1, oc)
    fields = {"batches": n, "in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc,
              "k_h": kh, "k_w": kw, "stride_h": sh, "stride_w": sw, "dilation_h": dh, "dilation_w": dw,
              "pad_h": quant.padding_before(sh, dh, ih, kh, oh), "pad_w": quant.padding_before(sw, dw, iw, kw, ow),
              "in_zp": _zp(x), "out_zp": _zp(y), "act_min": act_min, "act_max": act_max, "rq": rq}
    args: list[tuple[str, object]] = [("in", x.index), ("const", "filter"), barg, ("out", y.index)]
    macs = n * oh * ow * oc * kh * kw * (1 if depthwise else ic)
    if depthwise:
        if w.shape[0] != 1 or w.shape[3] != oc:
            raise _fail(op, f"depthwise filter shape {w.shape}", "The model is malformed.")
        mult_dm = int(op.options.get("depthMultiplier", 0)) or oc // ic
        if ic * mult_dm != oc:
            raise _fail(op, f"depth multiplier {mult_dm} x {ic} != {oc}", "The model is malformed.")
        args.insert(0, ("lit", str(mult_dm)))
        kernel = "pw_depthwise_conv2d_s8"
    else:
        if w.shape[0] != oc or w.shape[3] != ic:
            raise _fail(op, f"filter shape {w.shape} for {ic} -> {oc} channels", "The model is malformed.")
        kernel = "pw_conv2d_s8"
    return Step(op, kernel, "pw_conv_params_t", {k: str(v) for k, v in fields.items()},
                [ConstArray("filter", "int8_t", w.data.astype(np.int64).ravel())] + bconsts + consts, args, macs)


FC_ROUNDINGS = {"tflm": 0, "litert": 1, "litert_ref": 2}


def _fully_connected(op: Operator, g: Graph, rounding: str) -> Step:
    x, w, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    for t, role in ((x, "input"), (w, "weights"), (y, "output")):
        _int8(op, t, role)
    if w.data is None or len(w.shape) != 2:
        raise _fail(op, "the weights are not a constant 2-D tensor", "Only constant weights are supported.")
    if int(op.options.get("weightsFormat", 0)) != 0:
        raise _fail(op, "shuffled weights format", "Export with the default weights format.")
    out_d, in_d = w.shape
    if x.size % in_d:
        raise _fail(op, f"input of {x.size} values is not a multiple of {in_d}", "The model is malformed.")
    if in_d > 33000:
        raise _fail(op, f"{in_d} inputs could overflow the int32 accumulator", "Use a smaller layer.")
    in_scale, out_scale = float(x.scale[0]), float(y.scale[0])
    if w.scale.size == out_d and out_d > 1:
        mult, shift = quant.per_channel_multipliers(in_scale, w.scale, out_scale, out_d)
    elif w.scale.size == 1:
        m, s = quant.per_tensor_multiplier(in_scale, float(w.scale[0]), out_scale)
        mult, shift = [m], [s]
    else:
        raise _fail(op, f"{w.scale.size} weight scales for {out_d} outputs", "The model is malformed.")
    act_min, act_max = _act(op, y)
    consts, rq = _requant(mult, shift)
    bconsts, barg = _bias(op, g, op.inputs[2] if len(op.inputs) > 2 else -1, out_d)
    batches = x.size // in_d
    fields = {"batches": batches, "in_depth": in_d, "out_depth": out_d, "in_zp": _zp(x), "filter_zp": _zp(w),
              "out_zp": _zp(y), "act_min": act_min, "act_max": act_max, "rq": rq,
              "rounding": FC_ROUNDINGS[rounding], "ideal_scale": "NULL"}
    if rounding == "litert_ref":
        # LiteRT's reference FC rescales in double: input * filter / output scale per channel
        scales = np.asarray(w.scale, np.float32)
        ideal = [float(np.float32(in_scale)) * float(s) / float(np.float32(out_scale)) for s in scales]
        consts.append(ConstArray("ideal", "double", np.asarray(ideal, np.float64)))
        fields["ideal_scale"] = "@IDEAL"
    kernel = "pw_fully_connected_ideal_s8" if rounding == "litert_ref" else "pw_fully_connected_s8"
    return Step(op, kernel, "pw_fc_params_t", {k: str(v) for k, v in fields.items()},
                [ConstArray("filter", "int8_t", w.data.astype(np.int64).ravel())] + bconsts + consts,
                [("in", x.index), ("const", "filter"), barg, ("out", y.index)], batches * in_d * out_d)


def _pool(op: Operator, g: Graph) -> Step:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    _int8(op, x, "input")
    _int8(op, y, "output")
    if float(x.scale[0]) != float(y.scale[0]) or _zp(x) != _zp(y):
        raise _fail(op, "input and output quantization differ", "TFLite requires them equal; re-export.")
    n, ih, iw, c = x.shape
    _, oh, ow, _ = y.shape
    kh, kw = int(op.options["filterHeight"]), int(op.options["filterWidth"])
    sh, sw = int(op.options["strideH"]), int(op.options["strideW"])
    act_min, act_max = _act(op, y)
    fields = {"batches": n, "in_h": ih, "in_w": iw, "channels": c, "out_h": oh, "out_w": ow, "k_h": kh, "k_w": kw,
              "stride_h": sh, "stride_w": sw, "pad_h": quant.padding_before(sh, 1, ih, kh, oh),
              "pad_w": quant.padding_before(sw, 1, iw, kw, ow), "act_min": act_min, "act_max": act_max}
    kernel = "pw_max_pool2d_s8" if op.name == "MAX_POOL_2D" else "pw_avg_pool2d_s8"
    return Step(op, kernel, "pw_pool_params_t", {k: str(v) for k, v in fields.items()}, [],
                [("in", x.index), ("out", y.index)])


def _mean(op: Operator, g: Graph) -> Step:
    x, axis_t, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    _int8(op, x, "input")
    _int8(op, y, "output")
    if axis_t.data is None:
        raise _fail(op, "the axis is not a constant", "Only constant reduction axes are supported.")
    rank = len(x.shape)
    axes = sorted({int(a) % rank for a in np.asarray(axis_t.data).ravel()})
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise _fail(op, f"axes {axes} are not contiguous", "Reduce over neighbouring axes (global pooling).")
    shape = list(x.shape)
    outer = int(np.prod(shape[:axes[0]], dtype=np.int64))
    reduce = int(np.prod(shape[axes[0]:axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(shape[axes[-1] + 1:], dtype=np.int64))
    mult, shift = quant.mean_multiplier(float(x.scale[0]), float(y.scale[0]), reduce)
    fields = {"outer": outer, "reduce": reduce, "inner": inner, "in_zp": _zp(x),
              "out_zp": _zp(y), "multiplier": mult, "shift": shift}
    return Step(op, "pw_mean_s8", "pw_mean_params_t", {k: str(v) for k, v in fields.items()}, [],
                [("in", x.index), ("out", y.index)])


def _concat(op: Operator, g: Graph) -> Step:
    y = g.tensors[op.outputs[0]]
    _int8(op, y, "output")
    xs = [g.tensors[i] for i in op.inputs]
    if len(xs) > 8:
        raise _fail(op, f"{len(xs)} inputs (at most 8)", "Concatenate fewer tensors.")
    for x in xs:
        _int8(op, x, "input")
        if float(x.scale[0]) != float(y.scale[0]) or _zp(x) != _zp(y):
            raise _fail(op, f"input {x.name!r} is quantized differently from the output",
                        "int8 TFLite concatenation shares one scale; re-export with the standard converter.")
    if int(op.options.get("fusedActivationFunction", 0)) != 0:
        raise _fail(op, "fused activation on a concatenation", "Apply the activation before concatenating.")
    axis = int(op.options.get("axis", 0)) % len(y.shape)
    outer = int(np.prod(y.shape[:axis], dtype=np.int64))
    copy = [int(np.prod(x.shape[axis:], dtype=np.int64)) for x in xs]
    fields = {"outer": str(outer), "n": str(len(xs)), "copy_bytes": "{" + ", ".join(map(str, copy)) + "}"}
    return Step(op, "pw_concat_s8", "pw_concat_params_t", fields, [],
                [("ins", [x.index for x in xs]), ("out", y.index)])


def _softmax(op: Operator, g: Graph) -> Step:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    _int8(op, x, "input")
    _int8(op, y, "output")
    if abs(float(y.scale[0]) - 1.0 / 256) > 1e-9 or _zp(y) != -128:
        raise _fail(op, f"output quantization ({float(y.scale[0])}, {_zp(y)}) is not (1/256, -128)",
                    "Use the standard int8 converter, which fixes the softmax output scale.")
    depth = x.shape[-1]
    mult, shift, diff_min = quant.softmax_params(float(op.options.get("beta", 1.0)), float(x.scale[0]))
    fields = {"rows": x.size // depth, "depth": depth, "input_multiplier": mult, "input_left_shift": shift,
              "diff_min": diff_min}
    return Step(op, "pw_softmax_s8", "pw_softmax_params_t", {k: str(v) for k, v in fields.items()}, [],
                [("in", x.index), ("out", y.index)])


def _quantize(op: Operator, g: Graph) -> Step:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if x.dtype != np.int8:
        raise _fail(op, f"QUANTIZE from {np.dtype(x.dtype).name}", "Export with int8 inputs "
                    "(converter.inference_input_type = tf.int8) so no float op runs on the device.")
    _int8(op, y, "output")
    m, s = quant.quantize_multiplier(float(np.float32(x.scale[0])) / float(np.float32(y.scale[0])))
    fields = {"size": x.size, "in_zp": _zp(x), "out_zp": _zp(y), "multiplier": m, "shift": s}
    return Step(op, "pw_requantize_s8", "pw_requantize_params_t", {k: str(v) for k, v in fields.items()}, [],
                [("in", x.index), ("out", y.index)])


def _add(op: Operator, g: Graph) -> Step:
    a, b, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    for t, role in ((a, "input 1"), (b, "input 2"), (y, "output")):
        _int8(op, t, role)
        if t.data is not None:
            raise _fail(op, f"{role} is a constant", "Fold constant additions into the bias before export.")
    if a.shape != b.shape or a.shape != y.shape:
        raise _fail(op, f"shapes {a.shape} + {b.shape} -> {y.shape} need broadcasting",
                    "Only same-shape ADD (residual connections) is supported.")
    sa, sb, so = (float(np.float32(t.scale[0])) for t in (a, b, y))
    twice_max = 2 * max(sa, sb)
    left_shift = 20
    m1, s1 = quant.quantize_multiplier(sa / twice_max)
    m2, s2 = quant.quantize_multiplier(sb / twice_max)
    mo, so_ = quant.quantize_multiplier(twice_max / ((1 << left_shift) * so))
    act_min, act_max = _act(op, y)
    fields = {"size": y.size, "in1_zp": _zp(a), "in2_zp": _zp(b), "out_zp": _zp(y), "left_shift": left_shift,
              "in1_multiplier": m1, "in1_shift": s1, "in2_multiplier": m2, "in2_shift": s2, "out_multiplier": mo,
              "out_shift": so_, "act_min": act_min, "act_max": act_max}
    return Step(op, "pw_add_s8", "pw_add_params_t", {k: str(v) for k, v in fields.items()}, [],
                [("in", a.index), ("in", b.index), ("out", y.index)])


def lower(g: Graph, fc_rounding: str = "tflm") -> tuple[list[Step | None], dict[int, int]]:
    """Steps in execution order (None for alias ops) and the alias map output tensor -> input tensor.
    ``fc_rounding``: which interpreter FULLY_CONNECTED rounds like ("tflm", "litert", "litert_ref")."""
    if fc_rounding not in FC_ROUNDINGS:
        raise ValueError(f"fc_rounding must be one of {sorted(FC_ROUNDINGS)}, got {fc_rounding!r}")
    steps: list[Step | None] = []
    aliases: dict[int, int] = {}
    for op in g.operators:
        if op.name in ALIAS_OPS:
            x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            if x.nbytes != y.nbytes:
                raise _fail(op, f"{x.shape} -> {y.shape} changes the size", "The model is malformed.")
            aliases[y.index] = x.index
            steps.append(None)
        elif op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            steps.append(_conv(op, g, op.name == "DEPTHWISE_CONV_2D"))
        elif op.name == "FULLY_CONNECTED":
            steps.append(_fully_connected(op, g, fc_rounding))
        elif op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            steps.append(_pool(op, g))
        elif op.name == "MEAN":
            steps.append(_mean(op, g))
        elif op.name == "CONCATENATION":
            steps.append(_concat(op, g))
        elif op.name == "SOFTMAX":
            steps.append(_softmax(op, g))
        elif op.name == "ADD":
            steps.append(_add(op, g))
        elif op.name == "QUANTIZE":
            steps.append(_quantize(op, g))
        else:
            raise _fail(op, "this operator has no firmware kernel",
                        f"Supported: {', '.join(SUPPORTED)}. Change the layer, or add a kernel in firmware/core "
                        "and its lowering in training/codegen/lower.py.")
    return steps, aliases
