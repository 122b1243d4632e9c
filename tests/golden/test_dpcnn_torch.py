#!/usr/bin/python3
"""Tests of launch/dpcnn_torch.py (run by hand: /usr/bin/python3 tests/golden/test_dpcnn_torch.py).

- the parser takes what doc/models.md allows and refuses, naming the line, what it
  refuses; the canonical form is exactly PyTorch's print(model), and parses back;
- the keyed generator and the dropout recipe give the values src/rng.c gives
  (known answers dumped from a C program linked with dpcnn's rng.c);
- the data digests match a scalar FNV-1a reference, and dpcnn-prepare's file
  (data/fashion-mnist.h5, when it has been built) bit for bit, and write_data's
  files read back with their digests verified;
- checkpoints: save_weights / load_checkpoint / load_adam round trip, strict.
Prints one line per group and exits 1 at the first failure.
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "launch"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dpcnn_torch as dt  # noqa: E402


def check(cond, what):
    if not cond:
        print("test_dpcnn_torch: FAIL: " + what, file=sys.stderr)
        sys.exit(1)


def refused(text, *fragments):
    try:
        dt.parse(text, "t.model")
    except dt.DescriptionError as e:
        msg = str(e)
        check(all(f in msg for f in fragments), "message %r lacks %s" % (msg, fragments))
        return
    check(False, "accepted %r" % text)


def test_parser():
    # what doc/models.md refuses by name, and malformed lines; each message names the line
    refused("Conv2d(1, 6, 5, dilation=2)", "t.model line 1", "dilation=2")
    refused("ReLU()\nConv2d(1, 6, 5, groups=2)", "line 2", "groups=2")
    refused("Conv2d(1, 6, 5, padding_mode='reflect')", "padding_mode='reflect'")
    refused("Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1), padding_mode=reflect)", "padding_mode='reflect'")
    refused("MaxPool2d(2, padding=1)", "padding")
    refused("AvgPool2d(2, ceil_mode=True)", "ceil_mode=True")
    refused("AvgPool2d(2, divisor_override=2)", "divisor_override")
    refused("BatchNorm2d(6, affine=False)", "affine=False")
    refused("BatchNorm1d(6, track_running_stats=False)", "track_running_stats=False")
    refused("Flatten(0)", "Flatten over other dimensions")
    refused("Conv2d(1, 6, (5, 3))", "non-square kernels")
    refused("MaxPool2d(2, stride=(2, 1))", "non-square strides")
    refused("Sigmoid()", "unknown layer Sigmoid")
    refused("Conv2d(1, 6)", "missing argument kernel_size")
    refused("Conv2d(1, 6, 5.0)", "kernel_size=5.0", "whole number")
    refused("Conv2d(1, 6, 5, foo=1)", "unknown argument 'foo'")
    refused("Conv2d(1, 6, 5, kernel_size=5)", "given twice")
    refused("Conv2d(1, 6, 5", "expected ')'")
    refused("(a.b): ReLU()", "layer name 'a.b'")
    refused("(x): ReLU()\n(x): ReLU()", "line 2", "already used on line 1")
    refused("ReLU()\n(0): ReLU()", "line 2", "already used")
    refused("Sequential(\nReLU()", "not closed")
    refused("Sequential(\nReLU()\n)\nReLU()", "line 4", "nothing may follow")
    refused("# nothing\n\n", "no layers")
    refused("Dropout(1.0)", "[0, 1)")
    refused("ReLU(inplace=1)", "True or False")
    # what it accepts: print(model) output, comments, short forms, names
    layers = dt.parse("Sequential(\n  (c1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))  # a comment\n"
                      "  (1): ReLU(inplace=True)\n)\n")
    check([(L.name, L.kind) for L in layers] == [("c1", "Conv2d"), ("1", "ReLU")]
          and layers[0].args["kernel_size"] == 5 and layers[1].args["inplace"], "print(model) form")
    check(dt.parse("MaxPool2d(3)")[0].args["stride"] == 3, "a pool's stride defaults to its kernel")
    m = dt.build(dt.parse("(forward): Linear(3, 4)\n(training): ReLU()"))
    check(list(m.state_dict()) == ["forward.weight", "forward.bias"], "names that are nn.Module attributes")
    print("parser: OK")


def test_canonical():
    conv = open(os.path.join(HERE, "gen_golden.py")).read().split('CONV_MODEL = """\\\n')[1].split('"""')[0]
    texts = dict(dt.BUILTIN, conv=conv,
                 extra="Conv2d(3, 4, 3, padding=1, bias=False)\nBatchNorm2d(4, eps=0.001, momentum=None)\n"
                       "ReLU(inplace=True)\nAvgPool2d(2, stride=1)\nFlatten()\nDropout(0)\nLinear(36, 2, bias=False)\n")
    for name, text in texts.items():
        layers = dt.parse(text, name)
        model = dt.build(layers)
        check(str(model).splitlines()[1:-1] == ["  " + s for s in dt.canonical_text(layers).splitlines()],
              "%s: canonical form differs from print(model)" % name)
        check(dt.parse(dt.canonical_text(layers)) == layers and dt.parse(str(model)) == layers,
              "%s: the canonical form does not parse back" % name)
    keys = list(dt.build(dt.parse(dt.BUILTIN["tutorial"])).state_dict())
    check(keys[0] == "conv1.weight" and keys[-1] == "out.bias", "tutorial keys")
    keys = list(dt.build(dt.parse(dt.BUILTIN["bn"])).state_dict())
    check(keys[:2] == ["0.weight", "0.bias"] and "3.running_mean" in keys and "3.num_batches_tracked" in keys,
          "bn keys")
    check(dt.infer_shapes(dt.parse(conv), (3, 32, 32), 10)[5] == (16, 4, 4), "conv shapes")
    try:
        dt.infer_shapes(dt.parse("Conv2d(1, 6, 5)\nLinear(3456, 10)"), (1, 28, 28), 10, "s")
        check(False, "Linear on a feature map accepted")
    except dt.DescriptionError as e:
        check("s line 2" in str(e) and "Flatten" in str(e), str(e))
    print("canonical form and shapes: OK")


# Known answers from a C program linked with src/rng.c: seed, purpose, index,
# then three next() values and three rng_uniform() floats as bits.
RNG_KNOWN = [
    (0, 1, 0, [0xda88981a7cad61f1, 0x9854e213e13ac37e, 0x819e5feb53e10ad1], [0x3f1b9be1, 0x3d720da0, 0x3d615d20]),
    (5, 1795, 0, [0x1dd621632175f502, 0x427102b43ac70f12, 0x6da9b54a39a05525], [0x3f2dd372, 0x3f268a14, 0x3ddabb28]),
    (5, 2563, 42949673023, [0x1ede2d3b6ba72a48, 0x3a0be262a73d7623, 0xdae8531a562f8042],
     [0x3f150aa6, 0x3f6c63fd, 0x3edcb726]),
    (2 ** 64 - 1, 2, 18364758544493064720, [0x49d1d95b756d5a82, 0x19cbaad2705e355e, 0xf67a0c1710f62878],
     [0x3ed9384c, 0x3f55d6fc, 0x3f4bb6d7]),
]
# dropout layer 7 (p 0.25, 256 elements), step 1, position 0; layer 10 (p 0.5, 32), step 3, position 63; seed 5
MASK_KNOWN = [
    (7, 1, 0, 256, 0.25,
     "111100100001111110111111011110010001101011110000111111110111101111111111111011011110111110101111"
     "111101111111111111101111111101110110010011111110011111001111111011111111111100101111101011101110"
     "1011010110110110011100101101111011001010000101110101111111101111"),
    (10, 3, 63, 32, 0.5, "11001100010001101010000110011000"),
]


def f32_bits(x):
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def test_rng():
    for seed, purpose, index, nexts, uniforms in RNG_KNOWN:
        r = dt.Rng(seed, purpose, index)
        check([r.next() for _ in range(3)] == nexts, "Rng.next for %s" % ((seed, purpose, index),))
        check([f32_bits(r.uniform()) for _ in range(3)] == uniforms, "Rng.uniform for %s" % ((seed, purpose, index),))
        v = dt.uniform_streams(seed, purpose, [index], 6)[0, 3:]
        check([f32_bits(u) for u in v] == uniforms, "uniform_streams for %s" % ((seed, purpose, index),))
    for layer, step, pos, count, p, bits in MASK_KNOWN:
        keep = dt.dropout_keep(5, layer, step, pos, 1, count, p)[0]
        check("".join("1" if k else "0" for k in keep) == bits, "dropout mask of layer %d" % layer)
    check(dt.dropout_scale(0.25) == np.float32(4.0 / 3.0), "dropout scale")
    # a KeyedDropout layer applies the mask and the scale, and is off in eval mode
    m = dt.build(dt.parse("Flatten()\n" * 10 + "Dropout(0.5)"), dropout_seed=5)   # at position 10
    dt.set_dropout_step(m, 3, first_position=63)
    x = torch.ones(1, 32)
    y = m(x)
    check(torch.equal(y[0], torch.tensor([2.0 if b == "1" else 0.0 for b in MASK_KNOWN[1][5]])), "KeyedDropout")
    m.eval()
    check(torch.equal(m(x), x), "KeyedDropout in eval mode")
    print("keyed generator and dropout masks: OK (known answers from src/rng.c)")


def fnv_reference(images, labels, block):
    """Scalar FNV-1a, byte by byte, as include/dpcnn/dataset.h defines the digests."""
    P, M64, out = 0x100000001b3, (1 << 64) - 1, []
    for b in range(0, len(labels), block):
        d = 0xcbf29ce484222325
        for i in range(b, min(b + block, len(labels))):
            h = 0xcbf29ce484222325
            for byte in images[i].tobytes() + bytes([int(labels[i])]):
                h = ((h ^ byte) * P) & M64
            for byte in h.to_bytes(8, "little"):
                d = ((d ^ byte) * P) & M64
        out.append(d)
    return out


def test_data():
    r = np.random.default_rng(3)
    x = r.integers(0, 256, (37, 3, 5, 4), dtype=np.uint8)
    y = r.integers(0, 10, 37, dtype=np.uint8)
    check(dt.block_digests(x, y, 10).tolist() == fnv_reference(x, y, 10), "block digests vs scalar FNV-1a")
    prepared = os.path.join(TOP, "data", "fashion-mnist.h5")
    if os.path.exists(prepared):
        import h5py
        with h5py.File(prepared, "r") as f:
            tr = f["train/images"][()], f["train/labels"][()]
            te = f["test/images"][()], f["test/labels"][()]
            for split, (im, lab) in (("train", tr), ("test", te)):
                check(np.array_equal(dt.block_digests(im, lab), f[split + "/digests"][()]),
                      "digests of %s /%s" % (prepared, split))
        print("data digests == dpcnn-prepare's %s: OK (fingerprint %s)" % (prepared, dt.fingerprint(*tr, *te)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.h5")
        xt, yt = x[:12], y[:12]
        dt.write_data(path, x, y, xt, yt, [str(k) for k in range(10)], source="test")
        gx, gy, names = dt.read_data(path, "train")
        check(np.array_equal(gx, x) and np.array_equal(gy, y) and names == [str(k) for k in range(10)],
              "write_data / read_data")
        import h5py
        with h5py.File(path, "r") as f:
            check(f.attrs["format"] == b"dpcnn-data-2" and f["train/digests"].attrs["block_samples"] == 1000
                  and f["train/images"].fletcher32 and f["train/images"].compression == "gzip",
                  "data file layout")
    print("data files: OK")


def test_checkpoint():
    torch.manual_seed(0)
    layers = dt.parse(dt.BUILTIN["bn"])
    model = dt.build(layers)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.h5")
        dt.save_weights(path, model, layers, opt)
        back, back_layers = dt.load_checkpoint(path)
        check(back_layers == layers, "the model attribute")
        for k, v in model.state_dict().items():
            got = back.state_dict()[k]
            check(got.dtype == v.dtype and torch.equal(got, v), "tensor %s" % k)
        a, b = opt.state_dict()["state"], dt.load_adam(path, back).state_dict()["state"]
        check(all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i]), "Adam state")
        try:
            dt.load_checkpoint(path, dt.BUILTIN["lenet5"])
            check(False, "a bn file loaded as lenet5")
        except dt.CheckpointError as e:
            check("unexpected tensor '3.running_mean'" in str(e), str(e))
    print("checkpoints: OK")


if __name__ == "__main__":
    test_parser()
    test_canonical()
    test_rng()
    test_data()
    test_checkpoint()
