#!/usr/bin/python3
"""dpcnn_torch: the PyTorch side of dpcnn's networks as data (doc/models.md).

A dpcnn network is a model description: the layers of an nn.Sequential, one per
line, in PyTorch's own terms. This module reads a description the way dpcnn
does, builds the same network as a torch module whose state_dict keys are
dpcnn's, loads dpcnn checkpoints into it, reproduces dpcnn's keyed random
numbers (for dropout masks) and writes dpcnn data files. It needs torch, numpy
and h5py; `parse` and the random numbers need numpy alone.

    import dpcnn_torch as dt
    layers = dt.parse(dt.BUILTIN["bn"])          # or dt.parse_named("FILE|NAME")
    model = dt.build(layers)                     # nn.Sequential, keys 0.weight ...
    model, layers = dt.load_checkpoint("checkpoints/latest.h5")   # strict
    opt = dt.load_adam("checkpoints/latest.h5", model)
    dt.write_data("cifar.h5", tr_x, tr_y, te_x, te_y, ["airplane", ...])

Command line:
    dpcnn_torch.py print NAME|FILE [--input-shape C,H,W] [--canonical]
    dpcnn_torch.py eval CHECKPOINT [--data FILE] [--model NAME|FILE] [--normalize M,S...]
"""
import functools
import math
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

# torch and h5py are imported where they are needed, so that the parser and the
# random numbers work without them.

# ---------------------------------------------------------------- built-in networks
# The exact texts of doc/models.md.

BUILTIN = OrderedDict([
    ("tutorial", """\
(conv1): Conv2d(1, 6, kernel_size=5)
ReLU()
MaxPool2d(kernel_size=2, stride=2)
(conv2): Conv2d(6, 12, kernel_size=5)
ReLU()
MaxPool2d(kernel_size=2, stride=2)
Flatten()
(fc1): Linear(in_features=192, out_features=120)
ReLU()
(fc2): Linear(in_features=120, out_features=60)
ReLU()
(out): Linear(in_features=60, out_features=10)
"""),
    ("bn", """\
Conv2d(1, 6, 5)
ReLU()
MaxPool2d(2, 2)
BatchNorm2d(6)
Conv2d(6, 12, 5)
ReLU()
MaxPool2d(2, 2)
Flatten()
Linear(192, 120)
ReLU()
BatchNorm1d(120)
Linear(120, 60)
ReLU()
Linear(60, 10)
"""),
    ("lenet5", """\
Conv2d(1, 6, 5, padding=2)
ReLU()
AvgPool2d(2, 2)
Conv2d(6, 16, 5)
ReLU()
AvgPool2d(2, 2)
Flatten()
Linear(400, 120)
ReLU()
Linear(120, 84)
ReLU()
Linear(84, 10)
"""),
])

# ---------------------------------------------------------------- the layer table
# Each layer's arguments in torch.nn's order: (name, default, kind). Kinds:
#   int   a whole number            pair  a whole number or a tuple of two equal ones
#   real  a decimal or whole number bool  True/False      str  a quoted string
# and a trailing '?' allows None. REQUIRED marks an argument without a default.

REQUIRED = object()

_BATCHNORM_ARGS = [("num_features", REQUIRED, "int"), ("eps", 1e-05, "real"),
                   ("momentum", 0.1, "real?"), ("affine", True, "bool"),
                   ("track_running_stats", True, "bool")]

LAYER_ARGS = OrderedDict([
    ("Conv2d", [("in_channels", REQUIRED, "int"), ("out_channels", REQUIRED, "int"),
                ("kernel_size", REQUIRED, "pair"), ("stride", 1, "pair"), ("padding", 0, "pair"),
                ("dilation", 1, "pair"), ("groups", 1, "int"), ("bias", True, "bool"),
                ("padding_mode", "zeros", "str")]),
    ("MaxPool2d", [("kernel_size", REQUIRED, "pair"), ("stride", None, "pair?"),
                   ("padding", 0, "pair"), ("dilation", 1, "pair"),
                   ("return_indices", False, "bool"), ("ceil_mode", False, "bool")]),
    ("AvgPool2d", [("kernel_size", REQUIRED, "pair"), ("stride", None, "pair?"),
                   ("padding", 0, "pair"), ("ceil_mode", False, "bool"),
                   ("count_include_pad", True, "bool"), ("divisor_override", None, "int?")]),
    ("ReLU", [("inplace", False, "bool")]),
    ("Flatten", [("start_dim", 1, "int"), ("end_dim", -1, "int")]),
    ("Linear", [("in_features", REQUIRED, "int"), ("out_features", REQUIRED, "int"),
                ("bias", True, "bool")]),
    ("BatchNorm2d", _BATCHNORM_ARGS),
    ("BatchNorm1d", _BATCHNORM_ARGS),
    ("Dropout", [("p", 0.5, "real"), ("inplace", False, "bool")]),
])


class DescriptionError(ValueError):
    """A model description dpcnn would refuse; the message names the line."""


@dataclass
class Layer:
    """One parsed layer: every argument resolved (defaults filled in, pairs made
    single numbers, a pool's stride None made its kernel size)."""
    kind: str                   # 'Conv2d', ...
    name: str                   # the state_dict prefix: '(NAME)' or the position
    args: dict                  # argument name -> value, in torch.nn's order
    line: int = field(default=0, compare=False)   # 1-based line of the description
    text: str = field(default="", compare=False)  # the line as written


# ---------------------------------------------------------------- parsing

_NAME = re.compile(r"[A-Za-z0-9_]+\Z")
_LAYER_LINE = re.compile(r"(?:\((?P<name>[^()]*)\):\s*)?(?P<kind>[A-Za-z_][A-Za-z0-9_]*)\s*\((?P<args>.*)\)\Z")
_TOKEN = re.compile(r"""\s*(?:
      (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>'[^']*'|"[^"]*")
    | (?P<punct>[(),=])
    )""", re.X)


def _strip_comment(line):
    """The line without its '#' comment (a '#' inside a quoted string stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _tokens(text):
    """[(kind, value)] of an argument list; raises ValueError on a stray character."""
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError("unexpected %r" % text[pos:].strip()[:20])
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def _value(toks, i):
    """Parse one value at toks[i]; return (python value, next index)."""
    if i >= len(toks):
        raise ValueError("a value is missing at the end")
    kind, text = toks[i]
    if kind == "number":
        return (int(text) if re.fullmatch(r"-?\d+", text) else float(text)), i + 1
    if kind == "string":
        return _Quoted(text[1:-1]), i + 1
    if kind == "word":
        if text in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[text], i + 1
        return _Bare(text), i + 1
    if text == "(":
        items, i = [], i + 1
        while True:
            v, i = _value(toks, i)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError("a tuple holds whole numbers only")
            items.append(v)
            if i < len(toks) and toks[i][1] == ",":
                i += 1
                continue
            if i < len(toks) and toks[i][1] == ")":
                return tuple(items), i + 1
            raise ValueError("a tuple is not closed")
    raise ValueError("expected a value, not %r" % text)


class _Quoted(str):
    """A quoted string value (a bare word is a _Bare)."""


class _Bare(str):
    """A bare word where a value belongs: PyTorch prints padding_mode=reflect so."""


def _arguments(text):
    """Split ARGS into ([positional values], [(keyword, value)]), in order."""
    toks = _tokens(text)
    positional, keywords, i = [], [], 0
    while i < len(toks):
        if toks[i][0] == "word" and i + 1 < len(toks) and toks[i + 1][1] == "=":
            key = toks[i][1]
            value, i = _value(toks, i + 2)
            keywords.append((key, value))
        else:
            if keywords:
                raise ValueError("a positional argument follows a keyword argument")
            value, i = _value(toks, i)
            positional.append(value)
        if i < len(toks):
            if toks[i][1] != ",":
                raise ValueError("expected ',' between arguments, not %r" % toks[i][1])
            i += 1
            if i == len(toks):
                raise ValueError("an argument is missing after the last ','")
    return positional, keywords


def _show(v):
    """A value as the user wrote it, for messages."""
    if isinstance(v, _Quoted):
        return repr(str(v))
    return str(v)


def _convert(name, value, kind):
    """Check a value against its kind; return it normalised or raise ValueError."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ValueError("%s=None: expected %s" % (name, _KIND_TEXT[kind]))
    if kind == "pair" and isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError("%s=%s: expected a whole number or a pair of equal whole numbers"
                             % (name, _show(value)))
        if value[0] != value[1]:
            what = {"kernel_size": "non-square kernels are", "stride": "non-square strides are"}.get(
                name, "unequal %s is" % name)
            raise ValueError("%s=%s: %s not supported (expected equal numbers)"
                             % (name, _show(value), what))
        value = value[0]
    if kind in ("int", "pair"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("%s=%s: expected %s" % (name, _show(value), _KIND_TEXT[kind]))
        return value
    if kind == "real":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("%s=%s: expected %s" % (name, _show(value), _KIND_TEXT[kind]))
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("%s=%s: expected True or False" % (name, _show(value)))
        return value
    if kind == "str":
        if isinstance(value, _Bare) and name == "padding_mode":
            value = _Quoted(value)  # as print(model) shows it; refused below unless 'zeros'
        if not isinstance(value, _Quoted):
            raise ValueError("%s=%s: expected a quoted string" % (name, _show(value)))
        return str(value)
    raise AssertionError(kind)


_KIND_TEXT = {"int": "a whole number", "pair": "a whole number (or a pair of equal ones)",
              "real": "a number", "bool": "True or False", "str": "a quoted string"}


def _resolve(kind, positional, keywords):
    """Map the arguments onto LAYER_ARGS[kind]; return the args dict."""
    table = LAYER_ARGS[kind]
    names = [n for n, _, _ in table]
    given = OrderedDict()
    if len(positional) > len(table):
        raise ValueError("%s takes at most %d positional arguments (%s), got %d"
                         % (kind, len(table), ", ".join(names), len(positional)))
    for (name, _, _), value in zip(table, positional):
        given[name] = value
    for key, value in keywords:
        if key not in names:
            raise ValueError("unknown argument %r (%s takes %s)" % (key, kind, ", ".join(names)))
        if key in given:
            raise ValueError("argument %s is given twice" % key)
        given[key] = value
    args = OrderedDict()
    for name, default, akind in table:
        if name not in given:
            if default is REQUIRED:
                raise ValueError("missing argument %s" % name)
            args[name] = default
        else:
            args[name] = _convert(name, given[name], akind)
    if "stride" in args and args["stride"] is None:   # pools: stride defaults to the kernel
        args["stride"] = args["kernel_size"]
    return args


def _refusal(kind, a):
    """What dpcnn does not do, by name (doc/models.md); None if the layer is fine."""
    def positive(*names):
        for n in names:
            if a[n] < 1:
                return "%s=%d: expected a whole number >= 1" % (n, a[n])
        return None

    if kind == "Conv2d":
        return (positive("in_channels", "out_channels", "kernel_size", "stride")
                or (a["padding"] < 0 and "padding=%d: expected a whole number >= 0" % a["padding"])
                or (a["dilation"] != 1 and "dilation=%d is not supported (expected dilation=1)" % a["dilation"])
                or (a["groups"] != 1 and "groups=%d is not supported (expected groups=1)" % a["groups"])
                or (a["padding_mode"] != "zeros"
                    and "padding_mode=%r is not supported (expected padding_mode='zeros')" % a["padding_mode"])
                or None)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return (positive("kernel_size", "stride")
                or (a["padding"] != 0 and "pooling with padding is not supported (expected padding=0)")
                or (a.get("dilation", 1) != 1 and "dilation=%d is not supported (expected dilation=1)" % a["dilation"])
                or (a.get("return_indices") and "return_indices=True is not supported (expected False)")
                or (a["ceil_mode"] and "ceil_mode=True is not supported (dpcnn pools with the floor rule)")
                or (a.get("divisor_override") is not None
                    and "divisor_override is not supported (expected divisor_override=None)")
                or None)
    if kind == "Flatten":
        if (a["start_dim"], a["end_dim"]) != (1, -1):
            return ("Flatten over other dimensions is not supported (expected start_dim=1, end_dim=-1)")
        return None
    if kind == "Linear":
        return positive("in_features", "out_features")
    if kind.startswith("BatchNorm"):
        return (positive("num_features")
                or (not a["eps"] > 0 and "eps=%r: expected a number > 0" % a["eps"])
                or (a["momentum"] is not None and not 0 <= a["momentum"] <= 1
                    and "momentum=%r: expected a number in [0, 1] or None" % a["momentum"])
                or (not a["affine"] and "affine=False is not supported (expected affine=True)")
                or (not a["track_running_stats"]
                    and "track_running_stats=False is not supported (expected True)")
                or None)
    if kind == "Dropout":
        if not 0 <= a["p"] < 1:
            return "p=%r: expected a probability in [0, 1)" % a["p"]
        return None
    return None


def parse(text, source="model description"):
    """Parse a description (doc/models.md) into a list of Layer. Raises
    DescriptionError naming the line, the layer and what was expected."""
    layers = []
    wrapper = None          # line of 'Sequential(' while open; 'closed' after ')'
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue

        def fail(msg, show=True):
            raise DescriptionError("%s line %d: %s%s" % (source, number, (line + ": ") if show else "", msg))

        if wrapper == "closed":
            fail("nothing may follow the ')' that closes Sequential(")
        if re.fullmatch(r"Sequential\s*\(", line):
            if layers or wrapper is not None:
                fail("Sequential( may only come before the first layer")
            wrapper = number
            continue
        if line == ")":
            if wrapper is None:
                fail("')' closes nothing (no Sequential( before the layers)")
            wrapper = "closed"
            continue
        m = _LAYER_LINE.match(line)
        if not m:
            if re.match(r"(\([^()]*\):\s*)?[A-Za-z_][A-Za-z0-9_]*\s*\(", line):
                fail("expected ')' at the end of the line")
            fail("expected a layer, [(NAME): ]Layer(ARGS)")
        kind, name = m.group("kind"), m.group("name")
        if kind not in LAYER_ARGS:
            fail("unknown layer %s (expected one of %s)" % (kind, ", ".join(LAYER_ARGS)))
        try:
            positional, keywords = _arguments(m.group("args"))
            args = _resolve(kind, positional, keywords)
        except ValueError as e:
            fail(str(e))
        why = _refusal(kind, args)
        if why:
            fail(why)
        if name is None:
            name = str(len(layers))
        elif not _NAME.match(name):
            fail("layer name %r: expected letters, digits and _" % name)
        for other in layers:
            if other.name == name:
                fail("layer name %s is already used on line %d" % (name, other.line))
        layers.append(Layer(kind, name, args, number, line))
    if isinstance(wrapper, int):
        raise DescriptionError("%s line %d: Sequential( is not closed by a ')'" % (source, wrapper))
    if not layers:
        raise DescriptionError("%s: no layers" % source)
    return layers


def description_text(name_or_file):
    """(text, source) of a built-in name, a file, or '-' (standard input)."""
    if name_or_file in BUILTIN:
        return BUILTIN[name_or_file], name_or_file
    if name_or_file == "-":
        return sys.stdin.read(), "<stdin>"
    if os.path.isfile(name_or_file):
        with open(name_or_file, encoding="utf-8") as f:
            return f.read(), name_or_file
    raise DescriptionError("%s: neither a built-in network (%s) nor a file"
                           % (name_or_file, ", ".join(BUILTIN)))


def parse_named(name_or_file):
    """parse() of a built-in name or a file."""
    text, source = description_text(name_or_file)
    return parse(text, source)


# ---------------------------------------------------------------- canonical form

def _pair_text(v):
    return "(%d, %d)" % (v, v)


def layer_repr(layer):
    """The layer as PyTorch prints it (repr of the module build() makes), written
    out without torch so that dpcnn's C side has the rule in one place: reals as
    Python's repr (shortest round trip: 1e-05, 0.1, 0.0), pools' sizes as single
    numbers, Conv2d's as pairs, defaults shown as PyTorch shows them."""
    a, k = layer.args, layer.kind
    if k == "Conv2d":
        s = "%d, %d, kernel_size=%s, stride=%s" % (a["in_channels"], a["out_channels"],
                                                   _pair_text(a["kernel_size"]), _pair_text(a["stride"]))
        if a["padding"]:
            s += ", padding=" + _pair_text(a["padding"])
        if not a["bias"]:
            s += ", bias=False"
    elif k == "MaxPool2d":
        s = "kernel_size=%d, stride=%d, padding=0, dilation=1, ceil_mode=False" % (a["kernel_size"], a["stride"])
    elif k == "AvgPool2d":
        s = "kernel_size=%d, stride=%d, padding=0" % (a["kernel_size"], a["stride"])
    elif k == "ReLU":
        s = "inplace=True" if a["inplace"] else ""
    elif k == "Flatten":
        s = "start_dim=1, end_dim=-1"
    elif k == "Linear":
        s = "in_features=%d, out_features=%d, bias=%s" % (a["in_features"], a["out_features"], a["bias"])
    elif k.startswith("BatchNorm"):
        s = "%d, eps=%r, momentum=%r, affine=True, track_running_stats=True" % (
            a["num_features"], a["eps"], a["momentum"])
    elif k == "Dropout":
        s = "p=%r, inplace=%s" % (a["p"], a["inplace"])
    else:
        raise AssertionError(k)
    return "%s(%s)" % (k, s)


def canonical_text(layers):
    """The canonical description a dpcnn checkpoint stores: one layer per line,
    '(NAME): ' and the layer as print(model) shows it, each line ending in a
    newline, without the Sequential( ... ) wrapper."""
    return "".join("(%s): %s\n" % (L.name, layer_repr(L)) for L in layers)


# ---------------------------------------------------------------- shapes

def infer_shapes(layers, input_shape, num_classes=None, source="model description"):
    """Each layer's output shape for one sample of shape C,H,W: (C,H,W) for a
    feature map, (F,) for a flat one. Raises DescriptionError, naming the line,
    where a layer does not fit its input or the last is not [num_classes]."""
    shape = tuple(int(v) for v in input_shape)
    out = []
    for L in layers:
        a = L.args

        def fail(msg):
            raise DescriptionError("%s line %d: %s: %s" % (source, L.line, L.text or layer_repr(L), msg))

        flat = len(shape) == 1
        if L.kind in ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d") and flat:
            fail("takes a feature map C,H,W but gets a flat input [%d]" % shape[0])
        if L.kind in ("Linear", "BatchNorm1d") and not flat:
            fail("takes a flat input but gets a feature map %s: put Flatten() before it"
                 % list(shape))
        if L.kind == "Conv2d" or L.kind.endswith("Pool2d"):
            c, h, w = shape
            k, s = a["kernel_size"], a["stride"]
            p = a["padding"]
            if L.kind == "Conv2d" and c != a["in_channels"]:
                fail("expects %d input channels but gets %s" % (a["in_channels"], list(shape)))
            if h + 2 * p < k or w + 2 * p < k:
                fail("a %dx%d kernel does not fit the %dx%d input" % (k, k, h, w))
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            shape = (a["out_channels"] if L.kind == "Conv2d" else c, oh, ow)
        elif L.kind == "Flatten":
            shape = (int(np.prod(shape)),)
        elif L.kind == "Linear":
            if shape[0] != a["in_features"]:
                fail("expects in_features=%d but gets %d values" % (a["in_features"], shape[0]))
            shape = (a["out_features"],)
        elif L.kind.startswith("BatchNorm"):
            if shape[0] != a["num_features"]:
                fail("expects %d features (channels) but gets %s" % (a["num_features"], list(shape)))
        out.append(shape)
    if num_classes is not None and shape != (num_classes,):
        L = layers[-1]
        raise DescriptionError("%s line %d: %s: the last layer must give one value per class, [%d], "
                               "but gives %s" % (source, L.line, L.text or layer_repr(L), num_classes,
                                                 list(shape)))
    return out


# ---------------------------------------------------------------- dpcnn's random numbers
# SplitMix64 keyed streams, bit for bit as src/rng.c (doc/determinism.md).

MASK64 = (1 << 64) - 1
GAMMA = 0x9e3779b97f4a7c15
PURPOSE_KEY = 0xd6e8feb86659fd93
INDEX_KEY = 0xa0761d6478bd642f
STREAM_INIT, STREAM_PERM = 1, 2


def stream_dropout(layer_index):
    """The purpose of the dropout stream of the layer at position L: 3 + 256 L."""
    return 3 + 256 * layer_index


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK64
    return z ^ (z >> 31)


class Rng:
    """One keyed stream, in plain Python integers (readable; see uniform_streams
    for many streams at once)."""

    def __init__(self, seed, purpose, index):
        self.state = mix64(mix64(seed & MASK64) ^ ((purpose * PURPOSE_KEY) & MASK64)
                           ^ ((index * INDEX_KEY) & MASK64))

    def next(self):
        self.state = (self.state + GAMMA) & MASK64
        return mix64(self.state)

    def uniform(self):
        """(next >> 40) * 2^-24: 24 bits, exact as a float32, in [0, 1)."""
        return float(np.float32(self.next() >> 40) * np.float32(2.0 ** -24))


def _mix64_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    return z ^ (z >> np.uint64(31))


def uniform_streams(seed, purpose, indices, count):
    """float32 [len(indices), count]: the first `count` uniforms of the streams
    (seed, purpose, index) for each index. Vectorised: the k-th draw of a stream
    is mix64(start + k * GAMMA), all arithmetic modulo 2^64."""
    indices = np.asarray(indices, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _mix64_np(np.uint64(seed & MASK64)) ^ np.uint64((purpose * PURPOSE_KEY) & MASK64)
        start = _mix64_np(key ^ (indices * np.uint64(INDEX_KEY)))
        k = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(GAMMA)
        z = _mix64_np(start[:, None] + k[None, :])
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)


def dropout_keep(seed, layer_index, step, first_position, n, count, p):
    """bool [n, count]: dpcnn's dropout mask (doc/models.md "Dropout"). For the
    dropout layer at position layer_index, the sample at epoch position i and the
    global step t (from 1), the stream is (seed, 3 + 256 L, t 2^32 + i); element k
    is kept if the k-th draw u is >= p. u is compared exactly, as a double, with
    p as written (not with p rounded to float)."""
    positions = np.arange(first_position, first_position + n, dtype=np.uint64)
    index = (np.uint64(step) << np.uint64(32)) + positions
    u = uniform_streams(seed, stream_dropout(layer_index), index, count)
    return u.astype(np.float64) >= float(p)


def dropout_scale(p):
    """The factor of a kept element: 1 / (1 - p) in double, rounded to float32."""
    return np.float32(1.0 / (1.0 - float(p)))


# ---------------------------------------------------------------- the torch module

def _torch():
    import torch  # deferred: the parser and the generator work without torch
    return torch


@functools.lru_cache(maxsize=None)
def _keyed_dropout_class():
    """KeyedDropout, defined on first use (it subclasses torch's nn.Dropout)."""
    nn = _torch().nn

    class KeyedDropout(nn.Dropout):
        """nn.Dropout with dpcnn's masks: y = x * (mask * float32(1/(1-p))), the
        mask from dropout_keep(). Before each training forward pass set `step`
        (the global step, from 1) and `first_position` (the epoch position of the
        batch's first sample); set_dropout_step() does it for a whole model."""

        def __init__(self, p, layer_index, seed):
            super().__init__(p)
            self.layer_index, self.seed = layer_index, seed
            self.step, self.first_position = 1, 0
            self.last_keep = None   # the last mask, bool [n, count], for tests

        def forward(self, x):
            torch = _torch()
            if not self.training:
                return x
            n, count = x.shape[0], int(np.prod(x.shape[1:]))
            keep = dropout_keep(self.seed, self.layer_index, self.step, self.first_position,
                                n, count, self.p)
            self.last_keep = keep
            factor = keep.astype(np.float32) * dropout_scale(self.p)
            return x * torch.from_numpy(factor).reshape(x.shape)

        def _get_name(self):   # print(model) shows it as the Dropout it stands for
            return "Dropout"

    return KeyedDropout


def set_dropout_step(model, step, first_position=0):
    """Set the step and first epoch position of every keyed dropout layer."""
    for m in model.modules():
        if hasattr(m, "layer_index") and hasattr(m, "first_position"):
            m.step, m.first_position = step, first_position


def _torch_layer(layer, index, dropout_seed):
    nn = _torch().nn
    a = layer.args
    if layer.kind == "Conv2d":
        return nn.Conv2d(a["in_channels"], a["out_channels"], a["kernel_size"], stride=a["stride"],
                         padding=a["padding"], bias=a["bias"])
    if layer.kind == "MaxPool2d":
        return nn.MaxPool2d(a["kernel_size"], stride=a["stride"])
    if layer.kind == "AvgPool2d":
        return nn.AvgPool2d(a["kernel_size"], stride=a["stride"],
                            count_include_pad=a["count_include_pad"])
    if layer.kind == "ReLU":
        return nn.ReLU(inplace=a["inplace"])
    if layer.kind == "Flatten":
        return nn.Flatten()
    if layer.kind == "Linear":
        return nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])
    if layer.kind in ("BatchNorm2d", "BatchNorm1d"):
        return getattr(nn, layer.kind)(a["num_features"], eps=a["eps"], momentum=a["momentum"])
    if layer.kind == "Dropout":
        if dropout_seed is None:
            return nn.Dropout(a["p"], inplace=a["inplace"])
        return _keyed_dropout_class()(a["p"], index, dropout_seed)
    raise AssertionError(layer.kind)


def build(layers, dropout_seed=None):
    """The nn.Sequential of parsed layers (or of a description text), its
    children named as the layers are (as nn.Sequential(OrderedDict(...)) names
    them), so state_dict keys are dpcnn's. Weights get PyTorch's
    default initialisation (seed torch first for a fixed one). Dropout is
    torch's own unless dropout_seed is given: then its masks are dpcnn's
    (KeyedDropout, see set_dropout_step)."""
    nn = _torch().nn
    if isinstance(layers, str):
        layers = parse(layers)
    model = nn.Sequential()
    for index, layer in enumerate(layers):
        module = _torch_layer(layer, index, dropout_seed)
        if hasattr(model, layer.name) and layer.name not in model._modules:
            # A name such as 'forward' or 'training' is a fine dpcnn name but an
            # attribute of nn.Module, which add_module refuses. Sequential runs,
            # prints and names its state_dict from _modules alone.
            model._modules[layer.name] = module
        else:
            model.add_module(layer.name, module)
    return model


def sample_shape(images):
    """C,H,W of uint8 images [N,H,W] (C = 1) or [N,C,H,W]."""
    return ((1,) + tuple(images.shape[1:])) if images.ndim == 3 else tuple(images.shape[1:])


def to_input(images, normalize=None):
    """uint8 images [N,H,W] or [N,C,H,W] -> float32 tensor [N,C,H,W]: x / 255
    (ToTensor), then with normalize = [(mean, std)] per channel (x - mean) / std
    in float32, as torchvision's Normalize."""
    torch = _torch()
    t = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    if t.dtype != torch.uint8:
        raise TypeError("expected uint8 images, got %s" % t.dtype)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    x = t.float().div(255)
    if normalize:
        if len(normalize) != x.shape[1]:
            raise ValueError("--normalize has %d MEAN,STD pairs for %d channels"
                             % (len(normalize), x.shape[1]))
        mean = torch.tensor([m for m, _ in normalize], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor([s for _, s in normalize], dtype=torch.float32).view(1, -1, 1, 1)
        x = x.sub(mean).div(std)
    return x


def parse_normalize(text):
    """'none' -> None; 'M,S[,M,S...]' -> [(M, S), ...] (one pair per channel)."""
    if text is None or text == "none":
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError("--normalize %s: expected MEAN,STD[,MEAN,STD...] or none" % text)
    if len(vals) % 2 or any(s <= 0 or not math.isfinite(s) for s in vals[1::2]):
        raise ValueError("--normalize %s: expected MEAN,STD pairs with STD > 0" % text)
    return list(zip(vals[0::2], vals[1::2]))


# ---------------------------------------------------------------- checkpoints

class CheckpointError(ValueError):
    """A weights file that does not fit the network (every problem listed)."""


def read_description(path):
    """(text, source) of the network a checkpoint holds: its root attribute
    'model', or the tutorial network for files from before networks were data."""
    import h5py
    with h5py.File(path, "r") as f:
        if "model" not in f.attrs:
            return BUILTIN["tutorial"], "%s (no 'model' attribute: the tutorial network)" % path
        text = f.attrs["model"]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return str(text), "%s: attribute 'model'" % path


def read_state_dict(path, model):
    """The root datasets of a dpcnn weights file as a state_dict for `model`.
    Float tensors must be float32 and num_batches_tracked an integer scalar
    (read as int64); every missing, unexpected, misshapen, mistyped or
    non-finite entry is reported at once in a CheckpointError."""
    import h5py
    torch = _torch()
    want = model.state_dict()
    sd, problems = OrderedDict(), []
    with h5py.File(path, "r") as f:
        for key in f.keys():
            d = f[key]
            if not isinstance(d, h5py.Dataset):
                continue
            if key not in want:
                problems.append("unexpected tensor %r %s" % (key, list(d.shape)))
                continue
            w = want[key]
            if tuple(d.shape) != tuple(w.shape):
                problems.append("%r is %s, expected %s" % (key, list(d.shape), list(w.shape)))
                continue
            if w.dtype == torch.int64:
                if d.dtype.kind not in "iu":
                    problems.append("%r has type %s, expected an integer" % (key, d.dtype))
                    continue
                sd[key] = torch.tensor(np.asarray(d[()], dtype=np.int64))
            else:
                if d.dtype != np.float32:
                    problems.append("%r has type %s, expected float32" % (key, d.dtype))
                    continue
                v = torch.from_numpy(np.array(d[()], dtype=np.float32))
                if not torch.isfinite(v).all():
                    problems.append("%r holds a NaN or an infinity" % key)
                sd[key] = v
    for key, w in want.items():
        if key not in sd and not any(p.startswith("%r " % key) for p in problems):
            problems.append("missing tensor %r %s" % (key, list(w.shape)))
    if problems:
        raise CheckpointError("%s does not fit the network:\n  %s" % (path, "\n  ".join(problems)))
    return sd


def load_checkpoint(path, description=None, dropout_seed=None):
    """(model, layers) from a dpcnn checkpoint or weights file, loaded with
    load_state_dict(strict=True). The network is the file's own (attribute
    'model') unless `description` (a text) overrides it."""
    if description is None:
        text, source = read_description(path)
    else:
        text, source = description, "--model"
    layers = parse(text, source)
    model = build(layers, dropout_seed)
    try:
        state = read_state_dict(path, model)
    except CheckpointError as e:
        if description is None and text is BUILTIN["tutorial"]:
            raise CheckpointError("%s\n(the file has no 'model' attribute, so it was read as the "
                                  "tutorial network; name its network with --model)" % e)
        raise
    model.load_state_dict(state, strict=True)
    return model, layers


def load_adam(path, model):
    """torch.optim.Adam for `model` with a dpcnn checkpoint's state: the moments
    /optimizer/exp_avg/<key> and /optimizer/exp_avg_sq/<key> of each parameter
    (buffers have none), the step and hyperparameters in /optimizer's
    attributes (README.md's load_adam, for any network)."""
    import h5py
    torch = _torch()
    with h5py.File(path, "r") as f:
        g = f["optimizer"]
        a = g.attrs
        opt = torch.optim.Adam(model.parameters(), lr=float(a["lr"]),
                               betas=(float(a["beta1"]), float(a["beta2"])), eps=float(a["eps"]))
        names = [k for k, _ in model.named_parameters()]
        state = {i: {"step": torch.tensor(float(a["step"])),
                     "exp_avg": torch.from_numpy(g["exp_avg"][k][...]),
                     "exp_avg_sq": torch.from_numpy(g["exp_avg_sq"][k][...])}
                 for i, k in enumerate(names)}
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
    return opt


def _np(t):
    return t.detach().cpu().contiguous().numpy()


def write_state_dict(group, state_dict):
    """One dataset per state_dict entry: float32, num_batches_tracked int64 scalar."""
    torch = _torch()
    for k, v in state_dict.items():
        if v.dtype == torch.int64:
            group.create_dataset(k, data=np.int64(v.item()) if v.dim() == 0 else _np(v))
        else:
            group.create_dataset(k, data=_np(v).astype(np.float32))


def save_weights(path, model, layers, optimizer=None):
    """Write `model` in dpcnn's weights layout: the tensors at the root, the
    canonical description in the attribute 'model', and with `optimizer` (an
    Adam over model.parameters()) its state under /optimizer. This is a weights
    file for `dpcnn --init` and `dpcnn evaluate`, not a full checkpoint (it has
    no run state and no digest)."""
    import h5py
    with h5py.File(path, "w") as f:
        write_state_dict(f, model.state_dict())
        f.attrs["model"] = canonical_text(layers)
        if optimizer is not None:
            names = [k for k, _ in model.named_parameters()]
            st = optimizer.state_dict()
            g = f.create_group("optimizer")
            for i, k in enumerate(names):
                g.create_dataset("exp_avg/" + k, data=_np(st["state"][i]["exp_avg"]))
                g.create_dataset("exp_avg_sq/" + k, data=_np(st["state"][i]["exp_avg_sq"]))
            group = st["param_groups"][0]
            g.attrs["step"] = np.int64(st["state"][0]["step"].item())
            g.attrs["lr"] = np.float64(group["lr"])
            g.attrs["beta1"], g.attrs["beta2"] = np.float64(group["betas"][0]), np.float64(group["betas"][1])
            g.attrs["eps"] = np.float64(group["eps"])


# ---------------------------------------------------------------- data files

DATA_FORMAT = "dpcnn-data-2"
BLOCK_SAMPLES = 1000
FNV_OFFSET = 0xcbf29ce484222325
FNV_PRIME = 0x100000001b3


def sample_hashes(images, labels):
    """uint64 [N]: FNV-1a 64 over each sample's pixel bytes (C,H,W order), then
    its label byte. Vectorised across samples: one pixel column at a time, in
    slabs so the transposed copy stays small. uint64 arithmetic wraps."""
    n = images.shape[0]
    pixels = images.reshape(n, -1)
    out = np.empty(n, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    for lo in range(0, n, 4096):
        cols = np.ascontiguousarray(pixels[lo:lo + 4096].T)   # [P, slab]
        h = np.full(cols.shape[1], FNV_OFFSET, dtype=np.uint64)
        for col in cols:
            h ^= col
            h *= prime
        h ^= labels[lo:lo + 4096]
        h *= prime
        out[lo:lo + 4096] = h
    return out


def _fnv_words(h, words):
    """Continue FNV-1a 64 states h [B] over the rows of words [B, W] (uint64),
    each word as 8 little-endian bytes."""
    prime, ff = np.uint64(FNV_PRIME), np.uint64(0xff)
    for j in range(words.shape[1]):
        w = words[:, j]
        for b in range(8):
            h = (h ^ ((w >> np.uint64(8 * b)) & ff)) * prime
    return h


def block_digests(images, labels, block=BLOCK_SAMPLES):
    """uint64 [ceil(N/block)]: per block of samples, FNV-1a 64 over the sample
    hashes as 8 little-endian bytes each (include/dpcnn/dataset.h)."""
    h = sample_hashes(images, labels)
    n = h.shape[0]
    full = n // block
    out = np.empty((n + block - 1) // block, dtype=np.uint64)
    if full:
        out[:full] = _fnv_words(np.full(full, FNV_OFFSET, dtype=np.uint64),
                                h[:full * block].reshape(full, block))
    if n % block:
        out[full] = _fnv_words(np.full(1, FNV_OFFSET, dtype=np.uint64), h[full * block:][None, :])[0]
    return out


def fingerprint(train_images, train_labels, test_images, test_labels):
    """The data's fingerprint as dpcnn prints and a checkpoint records it: FNV-1a
    64 over, per split, the sample count and shape [N,C,H,W] (C = 1 for [N,H,W]
    images) and the block digests, each as 8 little-endian bytes."""
    h = np.full(1, FNV_OFFSET, dtype=np.uint64)
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        shape = (images.shape[0],) + ((1,) if images.ndim == 3 else ()) + tuple(images.shape[1:])
        words = np.concatenate([np.array(shape, dtype=np.uint64), block_digests(images, labels)])
        h = _fnv_words(h, words[None, :])
    return "%016x" % int(h[0])


def _check_split(name, images, labels, num_classes):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError("%s: images and labels must be uint8 (got %s, %s)" % (name, images.dtype, labels.dtype))
    if images.ndim not in (3, 4) or labels.ndim != 1:
        raise ValueError("%s: expected images [N,H,W] or [N,C,H,W] and labels [N], got %s and %s"
                         % (name, list(images.shape), list(labels.shape)))
    if images.shape[0] == 0 or images.shape[0] != labels.shape[0]:
        raise ValueError("%s: %d images and %d labels (expected the same number, > 0)"
                         % (name, images.shape[0], labels.shape[0]))
    if labels.max() >= num_classes:
        raise ValueError("%s: label %d, but there are %d classes" % (name, labels.max(), num_classes))
    return np.ascontiguousarray(images), np.ascontiguousarray(labels)


def write_data(path, train_images, train_labels, test_images, test_labels, class_names,
               source="written by dpcnn_torch.write_data"):
    """Write a dpcnn data file (format dpcnn-data-2, as dpcnn-prepare does):
    /train and /test each with images uint8 [N,H,W] or [N,C,H,W] and labels
    uint8 [N], chunked by 1000 samples, deflate-compressed and Fletcher-32
    checksummed, and digests uint64 [ceil(N/1000)] with attribute block_samples;
    root attributes format, class_names (comma-separated) and source. Written
    under a temporary name and renamed, so `path` is complete or absent."""
    import h5py
    names = list(class_names)
    if not names or any(not n or "," in n for n in names) or len(names) > 256:
        raise ValueError("class_names: 1 to 256 non-empty names without commas")
    splits = [("train",) + _check_split("train", train_images, train_labels, len(names)),
              ("test",) + _check_split("test", test_images, test_labels, len(names))]
    if splits[0][1].shape[1:] != splits[1][1].shape[1:]:
        raise ValueError("train images are %s per sample but test images %s"
                         % (list(splits[0][1].shape[1:]), list(splits[1][1].shape[1:])))
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with h5py.File(tmp, "w-") as f:     # "w-": never over an existing file
            for split, images, labels in splits:
                g = f.create_group(split)
                n = images.shape[0]
                filters = dict(compression="gzip", compression_opts=4, fletcher32=True, track_times=False)
                g.create_dataset("images", data=images, chunks=(min(n, BLOCK_SAMPLES),) + images.shape[1:],
                                 **filters)
                g.create_dataset("labels", data=labels, chunks=(min(n, BLOCK_SAMPLES),), **filters)
                d = g.create_dataset("digests", data=block_digests(images, labels), dtype="<u8",
                                     track_times=False)
                d.attrs["block_samples"] = np.int64(BLOCK_SAMPLES)
            # fixed-length ASCII/UTF-8 strings, as dpcnn-prepare writes them
            f.attrs["format"] = np.bytes_(DATA_FORMAT)
            f.attrs["class_names"] = np.bytes_(",".join(names).encode("utf-8"))
            f.attrs["source"] = np.bytes_(str(source).encode("utf-8"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_data(path, split="test", limit=None, verify=True):
    """(images uint8 [N,...], labels uint8 [N], class_names) of a dpcnn data file's
    split ('train' or 'test'), the first `limit` samples if given. With verify,
    every block read whole is checked against its digest."""
    import h5py
    with h5py.File(path, "r") as f:
        g = f[split]
        n = g["images"].shape[0] if limit is None else min(limit, g["images"].shape[0])
        images, labels = g["images"][:n], g["labels"][:n]
        if verify:
            d = g["digests"]
            block = int(d.attrs["block_samples"])
            whole = n if n == g["images"].shape[0] else n - n % block
            if whole:
                got = block_digests(images[:whole], labels[:whole], block)
                bad = np.nonzero(got != d[:len(got)])[0]
                if bad.size:
                    b = int(bad[0])
                    raise ValueError("%s: /%s samples %d..%d do not match their digest (the file is damaged)"
                                     % (path, split, b * block, min(whole, (b + 1) * block) - 1))
        names = f.attrs.get("class_names", b"")
    names = names.decode("utf-8") if isinstance(names, bytes) else str(names)
    return images, labels, names.split(",") if names else []


def evaluate(model, images, labels, normalize=None, batch=1000):
    """(mean cross-entropy, accuracy) of model.eval() on uint8 images and labels."""
    torch = _torch()
    F = torch.nn.functional
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            x = to_input(images[i:i + batch], normalize)
            y = torch.from_numpy(np.asarray(labels[i:i + batch])).long()
            z = model(x)
            loss_sum += float(F.cross_entropy(z, y, reduction="sum"))
            correct += int((z.argmax(dim=1) == y).sum())
    model.train(was_training)
    return loss_sum / images.shape[0], correct / images.shape[0]


# ---------------------------------------------------------------- command line

def _cmd_print(args):
    text, source = description_text(args.model)
    layers = parse(text, source)
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError("--input-shape %s: expected C,H,W" % args.input_shape)
        shapes = infer_shapes(layers, shape, args.classes, source)
    model = build(layers)
    if args.canonical:
        sys.stdout.write(canonical_text(layers))
    else:
        print(model)
    if args.input_shape:
        print("%-8s %-12s %-14s %s" % ("name", "layer", "output", "parameters"))
        print("%-8s %-12s %-14s" % ("", "input", ",".join(map(str, shape))))
        for L, s in zip(layers, shapes):
            n = sum(p.numel() for p in model._modules[L.name].parameters())
            print("%-8s %-12s %-14s %d" % (L.name, L.kind, ",".join(map(str, s)), n))
        print("total parameters %d" % sum(p.numel() for p in model.parameters()))
    return 0


def _cmd_eval(args):
    torch = _torch()
    torch.set_num_threads(args.threads)
    description = None
    if args.model:
        description = description_text(args.model)[0]
    model, layers = load_checkpoint(args.checkpoint, description)
    n_params = sum(p.numel() for p in model.parameters())
    print("ok: %s loaded strictly (%d tensors, %d parameters, %d layers)"
          % (args.checkpoint, len(model.state_dict()), n_params, len(layers)))
    images, labels, names = read_data(args.data, "test", args.limit)
    infer_shapes(layers, sample_shape(images), len(names) or None, args.model or args.checkpoint)
    normalize = args.normalize
    if normalize is None:  # the checkpoint's own, as dpcnn evaluate takes it
        import h5py
        with h5py.File(args.checkpoint, "r") as f:
            stored = f.attrs.get("normalize", "none")
        normalize = stored.decode() if isinstance(stored, bytes) else str(stored)
    loss, acc = evaluate(model, images, labels, parse_normalize(normalize))
    print("test_loss=%.6f test_accuracy=%.4f test_samples=%d" % (loss, acc, images.shape[0]))
    return 0


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="dpcnn_torch.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("print", help="print(model) of a description")
    p.add_argument("model", metavar="NAME|FILE", help="a built-in network (%s), a file or -" % ", ".join(BUILTIN))
    p.add_argument("--canonical", action="store_true",
                   help="print the canonical form a checkpoint stores instead")
    p.add_argument("--input-shape", metavar="C,H,W", help="also infer and print each layer's output shape")
    p.add_argument("--classes", type=int, default=None, help="with --input-shape: the classes the last layer must give")
    p.set_defaults(run=_cmd_print)
    p = sub.add_parser("eval", help="load a checkpoint strictly and report its test accuracy")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--data", default=os.environ.get("DPCNN_DATA", "data/fashion-mnist.h5"),
                   help="a dpcnn data file (default $DPCNN_DATA or %(default)s)")
    p.add_argument("--model", metavar="NAME|FILE", help="the network, if not the checkpoint's own")
    p.add_argument("--normalize", default=None, metavar="MEAN,STD[,...]|none",
                   help="as dpcnn's --normalize (default: the checkpoint's own, else none)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(run=_cmd_eval)
    args = ap.parse_args(argv)
    try:
        return args.run(args)
    except (DescriptionError, CheckpointError, ValueError, OSError, KeyError) as e:
        print("dpcnn_torch: %s" % (e.args[0] if isinstance(e, KeyError) and e.args else e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
