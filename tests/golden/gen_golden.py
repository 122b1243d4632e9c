#!/usr/bin/python3
"""Generate the dpcnn golden fixtures with PyTorch.

Usage: /usr/bin/python3 tests/golden/gen_golden.py [OUT.h5] [--model NAME] [--data DIR]

--model tutorial (the default) writes tests/golden/golden.h5, the tutorial
network (tests/golden/model.py) in this layout (all float32 unless noted):
  x            uint8 [100,28,28]  first 100 Fashion-MNIST training images
  y            uint8 [100]        their labels
  init/<key>   initial parameters (PyTorch default init after manual_seed(0))
  logits       [100,10]           initial model on the batch
  loss         [1]                mean cross-entropy of logits vs y
  grad/<key>   parameter gradients after loss.backward()
  step1/<key>  parameters after one Adam step
  losses       [10]               loss of 10 consecutive steps on the batch
                                  (fresh Adam from init; recorded before each step)
  layers/{conv1_out [K,6,24,24], pool1_out [K,6,12,12], conv2_out [K,12,8,8],
          pool2_out [K,12,4,4], fc1_out [K,120], fc2_out [K,60]}
          for the first K = --layer-samples (default 10) samples of the batch
          (conv/fc outputs are pre-ReLU; pools are max_pool2d(relu(conv)))
  attrs: lr, beta1, beta2, eps (float64), torch_version, seed, source, ...

--model bn writes tests/golden/golden-bn.h5 (the built-in bn network on the same
100 images) and --model conv tests/golden/golden-conv.h5 (CONV_MODEL below, with
pooling, padding, stride 2, average pooling and dropout, on 64 synthetic 3x32x32
images), built by launch/dpcnn_torch.py, in this layout:
  x              uint8 [N,28,28] (one channel) or [N,3,32,32]; y uint8 [N]
  init/<key>     every state_dict entry (parameters and buffers; PyTorch's default
                 init after manual_seed(0); num_batches_tracked int64 scalars)
  logits [N,10]  the first training-mode forward pass;  loss [1]
  grad/<key>     the parameters' gradients of that pass
  step1/<key>    every state_dict entry after one Adam step (running statistics
                 after that forward pass)
  losses [10]    ten steps on the batch from init with a fresh Adam (each loss
                 recorded before its step);  state10/<key> every entry after them
  eval_logits [N,10]  model.eval() after the ten steps
  masks/<L>      uint8 [10,N,count] (networks with dropout): 1 where the dropout
                 layer at position L kept an element at step t = 1..10
  attrs: model (the canonical description), lr, beta1, beta2, eps (float64),
         micro_batch (= N: one micro-batch, PyTorch's single-process semantics),
         dropout_seed, torch_version, torch_seed, openblas_coretype, source
Dropout masks are dpcnn's (doc/models.md "Dropout"): seed dropout_seed, step t
for the t-th step (the single-step gradient is t = 1), positions 0..N-1.
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "launch"))

# OpenBLAS picks its kernel by CPU, and kernels round differently. golden.h5 was
# made with the generic Prescott kernel (what Debian's OpenBLAS 0.3.21 falls back
# to on CPUs it does not know); pinning it makes every fixture reproduce byte for
# byte on any x86-64 machine. Must be set before torch loads OpenBLAS.
os.environ.setdefault("OPENBLAS_CORETYPE", "Prescott")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import dpcnn_torch as dt  # noqa: E402
import model as M  # noqa: E402

SEED = 0
N_BATCH = 100
N_STEPS = 10
# The fixture is committed: keep it small. Layer dumps for all 100 samples would be
# 2.2 MB (conv1_out alone 1.38 MB), so only the first --layer-samples are stored.
# Fail above 3 MiB, warn above 1 MiB.
MAX_BYTES = 3 << 20
SOFT_MAX_BYTES = 1 << 20


def fail(msg):
    print("gen_golden: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def np32(t):
    return t.detach().cpu().contiguous().numpy().astype(np.float32)


def round_trip_check(init_sd):
    """Write init state_dict in dpcnn weights layout, read back, strict-load, compare."""
    fd, tmp = tempfile.mkstemp(suffix=".h5", prefix="dpcnn_rt_")
    os.close(fd)
    try:
        M.save_h5_state_dict(init_sd, tmp)
        with h5py.File(tmp, "r") as f:
            keys = sorted(f.keys())
            if keys != sorted(M.PARAM_NAMES):
                fail("round trip: file keys %s != %s" % (keys, sorted(M.PARAM_NAMES)))
            for k in keys:
                if f[k].dtype != np.float32:
                    fail("round trip: %s has dtype %s" % (k, f[k].dtype))
        sd = M.load_h5_state_dict(tmp)
        probs = M.check_state_dict(sd)
        if probs:
            fail("round trip: " + "; ".join(probs))
        fresh = M.Network()
        fresh.load_state_dict(sd, strict=True)
        got = fresh.state_dict()
        for k, v in init_sd.items():
            if got[k].dtype != v.dtype or got[k].shape != v.shape or not torch.equal(got[k], v):
                fail("round trip: tensor %s differs" % k)
    finally:
        os.unlink(tmp)
    print("round trip: OK (%d tensors)" % len(init_sd))


def same_adam(opt, back):
    """Every moment, the step and the hyperparameters of `back` (read from a
    checkpoint) equal opt's."""
    a, b = opt.state_dict(), back.state_dict()
    for i in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            if not torch.equal(a["state"][i][k], b["state"][i][k]):
                fail("optimizer round trip: %s of parameter %d differs" % (k, i))
    for k in ("lr", "betas", "eps"):
        if a["param_groups"][0][k] != b["param_groups"][0][k]:
            fail("optimizer round trip: %s differs" % k)


def optimizer_round_trip(net, opt):
    """The checkpoint layout for Adam's state: write it, read it back with the
    loader README.md documents, and check every moment and the step survive."""
    fd, tmp = tempfile.mkstemp(suffix=".h5", prefix="dpcnn_opt_")
    os.close(fd)
    try:
        M.save_h5_checkpoint(net, opt, tmp)
        fresh = M.Network()
        fresh.load_state_dict(M.load_h5_state_dict(tmp), strict=True)
        same_adam(opt, dt.load_adam(tmp, fresh))
    finally:
        os.unlink(tmp)
    print("optimizer round trip: OK (Adam state of %d tensors)" % len(opt.state_dict()["state"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="default tests/golden/golden.h5, or golden-NAME.h5 for --model NAME")
    ap.add_argument("--model", choices=["tutorial"] + sorted(FIXTURES), default="tutorial",
                    help="the network (default tutorial)")
    ap.add_argument("--data", default=M.DEFAULT_DATA_DIR)
    ap.add_argument("--no-spread", action="store_true",
                    help="network fixtures: skip the runs under OpenBLAS's other kernels")
    ap.add_argument("--layer-samples", type=int, default=10,
                    help="tutorial: store layers/* for only the first K samples of the batch (default 10, which keeps the committed file under 1 MB)")
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(HERE, "golden.h5" if args.model == "tutorial" else "golden-%s.h5" % args.model)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.model == "tutorial":
        tutorial_fixture(args)
    else:
        network_fixture(args)


def tutorial_fixture(args):
    """golden.h5: the tutorial network of model.py (the layout of the module docstring)."""
    if not 1 <= args.layer_samples <= N_BATCH:
        fail("--layer-samples must be in 1..%d" % N_BATCH)
    LN = args.layer_samples

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    images, labels = M.load_fashion_mnist(args.data, "train")
    x_u8 = np.ascontiguousarray(images[:N_BATCH])
    y_u8 = np.ascontiguousarray(labels[:N_BATCH])
    x = M.to_input(x_u8)
    y = torch.from_numpy(y_u8).long()

    net = M.Network()
    init_sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    same_as_sequential(init_sd, x)
    if list(init_sd.keys()) != M.PARAM_NAMES:
        fail("unexpected state_dict keys %s" % list(init_sd.keys()))
    for k, shp in M.PARAM_SHAPES:
        if tuple(init_sd[k].shape) != shp:
            fail("%s has shape %s" % (k, tuple(init_sd[k].shape)))

    round_trip_check(init_sd)

    # Initial forward/backward/step.
    opt = M.make_optimizer(net)
    opt.zero_grad()
    layers = net.forward_layers(x)
    logits = layers.pop("logits")
    plain_logits = net(x)
    if not torch.equal(plain_logits, logits):
        fail("forward_layers logits differ from forward()")
    loss = M.loss_fn(logits, y)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in net.named_parameters()}
    opt.step()
    optimizer_round_trip(net, opt)
    step1 = {k: v.detach().clone() for k, v in net.state_dict().items()}

    # 10 training steps from init with a fresh Adam.
    net2 = M.Network()
    net2.load_state_dict(init_sd, strict=True)
    opt2 = M.make_optimizer(net2)
    losses = []
    for i in range(N_STEPS):
        opt2.zero_grad()
        l = M.loss_fn(net2(x), y)
        l.backward()
        losses.append(l.item())
        opt2.step()
        if i == 0:
            for k, v in net2.state_dict().items():
                if not torch.equal(v, step1[k]):
                    fail("step1 mismatch between runs for %s" % k)
    losses = np.array(losses, dtype=np.float32)
    if losses[0] != np.float32(loss.item()):
        fail("losses[0]=%r != loss=%r" % (losses[0], loss.item()))
    if not np.all(np.isfinite(losses)):
        fail("non-finite losses %s" % losses)

    out = os.path.abspath(args.out)
    tmp_out = out + ".tmp"
    try:
        write_fixture(tmp_out, args, x_u8, y_u8, init_sd, logits, loss, grads, step1, losses, layers, LN)
        size = verify_fixture(tmp_out, losses, LN)  # fails (exit 1) before replacing the old file
        os.replace(tmp_out, out)
    finally:
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)

    print("torch %s, seed %d, threads 1" % (torch.__version__, SEED))
    print("initial loss = %.8f" % losses[0])
    print("losses[0..9] = %s" % " ".join("%.6f" % v for v in losses))
    print("wrote %s (%d bytes, %.2f MB)" % (out, size, size / 1e6))


def write_fixture(tmp_out, args, x_u8, y_u8, init_sd, logits, loss, grads, step1, losses, layers, LN):
    with h5py.File(tmp_out, "w") as f:
        f.create_dataset("x", data=x_u8, dtype=np.uint8)
        f.create_dataset("y", data=y_u8, dtype=np.uint8)
        g = f.create_group("init")
        for k in M.PARAM_NAMES:
            g.create_dataset(k, data=np32(init_sd[k]))
        f.create_dataset("logits", data=np32(logits))
        f.create_dataset("loss", data=np.array([loss.item()], dtype=np.float32))
        g = f.create_group("grad")
        for k in M.PARAM_NAMES:
            g.create_dataset(k, data=np32(grads[k]))
        g = f.create_group("step1")
        for k in M.PARAM_NAMES:
            g.create_dataset(k, data=np32(step1[k]))
        f.create_dataset("losses", data=losses)
        g = f.create_group("layers")
        for k in ("conv1_out", "pool1_out", "conv2_out", "pool2_out", "fc1_out", "fc2_out"):
            g.create_dataset(k, data=np32(layers[k][:LN]))
        f.attrs["lr"] = np.float64(M.LR)
        f.attrs["beta1"] = np.float64(M.BETA1)
        f.attrs["beta2"] = np.float64(M.BETA2)
        f.attrs["eps"] = np.float64(M.EPS)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["seed"] = np.int64(SEED)
        f.attrs["source"] = (
            "x/y: first %d samples (indices 0..%d) of Fashion-MNIST train-images-idx3-ubyte.gz / "
            "train-labels-idx1-ubyte.gz from %s; pixels fed to the model as uint8/255 float32 [N,1,28,28]"
            % (N_BATCH, N_BATCH - 1, args.data))
        f.attrs["generator"] = "tests/golden/gen_golden.py"
        f.attrs["num_threads"] = np.int64(1)
        f.attrs["layer_samples"] = np.int64(LN)


def verify_fixture(out, losses, LN):
    with h5py.File(out, "r") as f:
        expect = {"x": (N_BATCH, 28, 28), "y": (N_BATCH,), "logits": (N_BATCH, 10), "loss": (1,),
                  "losses": (N_STEPS,),
                  "layers/conv1_out": (LN, 6, 24, 24), "layers/pool1_out": (LN, 6, 12, 12),
                  "layers/conv2_out": (LN, 12, 8, 8), "layers/pool2_out": (LN, 12, 4, 4),
                  "layers/fc1_out": (LN, 120), "layers/fc2_out": (LN, 60)}
        for grp in ("init", "grad", "step1"):
            for k, shp in M.PARAM_SHAPES:
                expect[grp + "/" + k] = shp
        for name, shp in expect.items():
            if name not in f:
                fail("missing %s in output" % name)
            if f[name].shape != shp:
                fail("%s has shape %s, expected %s" % (name, f[name].shape, shp))
        if f["loss"][0] != losses[0]:
            fail("written loss mismatch")
    size = os.path.getsize(out)
    if size > MAX_BYTES:
        fail("%s is %d bytes (> %d)" % (out, size, MAX_BYTES))
    if size > SOFT_MAX_BYTES:
        print("note: fixture is %.2f MB (> 1 MiB); layers/ dominates, see --layer-samples" % (size / 1e6))
    return size


# ---------------------------------------------------------------- networks as data

def same_as_sequential(init_sd, x):
    """The tutorial network as dpcnn_torch builds it (nn.Sequential) must be
    model.Network exactly: the same keys, the same default init after
    manual_seed(0) and the same logits, bit for bit. Leaves torch's RNG as it was."""
    rng = torch.get_rng_state()
    torch.manual_seed(SEED)
    seq = dt.build(dt.parse(dt.BUILTIN["tutorial"], "tutorial"))
    torch.set_rng_state(rng)
    sd = seq.state_dict()
    if list(sd.keys()) != list(init_sd.keys()):
        fail("dpcnn_torch's tutorial has keys %s" % list(sd.keys()))
    for k, v in init_sd.items():
        if not torch.equal(sd[k], v):
            fail("dpcnn_torch's tutorial: %s differs from model.Network's" % k)
    net = M.Network()
    net.load_state_dict(init_sd, strict=True)
    with torch.no_grad():
        if not torch.equal(seq(x), net(x)):
            fail("dpcnn_torch's tutorial gives other logits than model.Network")
    print("dpcnn_torch tutorial == model.Network: OK (keys, init, logits)")


# The conv fixture's network: padding, stride 2, overlapping max-pool windows,
# average pooling and two dropout layers (positions 7 and 10).
CONV_MODEL = """\
Conv2d(3, 8, kernel_size=3, padding=1)
ReLU()
MaxPool2d(3, stride=2)
Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
ReLU()
AvgPool2d(2)
Flatten()
Dropout(p=0.25)
Linear(256, 32)
ReLU()
Dropout(0.5)
Linear(32, 10)
"""
# name: (description, batch source)
# Each network fixture: its description, its data, and Adam's eps. The bn
# fixture takes eps 1e-3: with 1e-8, the gradients that batch norm makes zero
# in exact arithmetic (8.bias, where BatchNorm1d follows) are rounding noise of
# 1e-9, and Adam's first steps turn noise into full steps of lr. The ten-step
# trajectory is then chaotic: PyTorch with OpenBLAS's Prescott and SkylakeX
# kernels differs from itself by 2.6e-3 in the losses and 0.16 in the logits
# after ten steps, and no tolerance could tell a bug from rounding. With 1e-3
# the noise moves nothing and the check is sharp.
FIXTURES = {"bn": (dt.BUILTIN["bn"], "fashion-mnist", 1e-3),
            "conv": (CONV_MODEL, "synthetic", M.EPS)}
DROPOUT_SEED = 5        # dpcnn's --seed for the dropout masks
SYNTHETIC_SEED = 20261201
SYNTHETIC_N = 64
FIXTURE_MAX_BYTES = 1000000


def fixture_batch(kind, data_dir):
    """(x uint8 as stored, y uint8, source text) of a fixture's batch."""
    if kind == "fashion-mnist":
        images, labels = M.load_fashion_mnist(data_dir, "train")
        x, y = np.ascontiguousarray(images[:N_BATCH]), np.ascontiguousarray(labels[:N_BATCH])
        return x, y, ("x/y: first %d samples (indices 0..%d) of Fashion-MNIST train-images-idx3-ubyte.gz / "
                      "train-labels-idx1-ubyte.gz from %s; pixels fed to the model as uint8/255 "
                      "float32 [N,1,28,28]" % (N_BATCH, N_BATCH - 1, data_dir))
    rng = np.random.default_rng(SYNTHETIC_SEED)
    x = rng.integers(0, 256, size=(SYNTHETIC_N, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=SYNTHETIC_N, dtype=np.uint8)
    return x, y, ("x/y: %d synthetic samples, numpy.random.default_rng(%d): x = integers(0, 256, "
                  "(%d,3,32,32), uint8), then y = integers(0, 10, %d, uint8); pixels fed to the model "
                  "as uint8/255 float32 [N,3,32,32]" % (SYNTHETIC_N, SYNTHETIC_SEED, SYNTHETIC_N, SYNTHETIC_N))


def clone_sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def dropout_layers(model):
    return [m for m in model if hasattr(m, "layer_index")]


def weights_round_trip(net, layers, opt):
    """Write the model (and Adam's state) in dpcnn's layout, load it back with
    dpcnn_torch (strict), and require every entry, its dtype and shape, and every
    moment and the step to survive."""
    fd, tmp = tempfile.mkstemp(suffix=".h5", prefix="dpcnn_rt_")
    os.close(fd)
    try:
        dt.save_weights(tmp, net, layers, opt)
        with h5py.File(tmp, "r") as f:
            for k, v in net.state_dict().items():
                want = (np.int64, ()) if v.dtype == torch.int64 else (np.float32, tuple(v.shape))
                if (f[k].dtype, f[k].shape) != want:
                    fail("round trip: %s is stored as %s %s" % (k, f[k].dtype, f[k].shape))
        fresh, fresh_layers = dt.load_checkpoint(tmp)
        if dt.canonical_text(fresh_layers) != dt.canonical_text(layers):
            fail("round trip: the 'model' attribute parses to another network")
        for k, v in net.state_dict().items():
            got = fresh.state_dict()[k]
            if got.dtype != v.dtype or got.shape != v.shape or not torch.equal(got, v):
                fail("round trip: tensor %s differs" % k)
        same_adam(opt, dt.load_adam(tmp, fresh))
    finally:
        os.unlink(tmp)
    print("round trip: OK (%d tensors, Adam state of %d parameters)"
          % (len(net.state_dict()), len(opt.state_dict()["state"])))


def network_fixture(args):
    """golden-NAME.h5 for a network given as a description (module docstring)."""
    text, kind, adam_eps = FIXTURES[args.model]
    layers = dt.parse(text, args.model)
    x_u8, y_u8, source = fixture_batch(kind, args.data)
    n = x_u8.shape[0]
    input_shape = (1,) + x_u8.shape[1:] if x_u8.ndim == 3 else x_u8.shape[1:]
    dt.infer_shapes(layers, input_shape, 10, args.model)
    x, y = dt.to_input(x_u8), torch.from_numpy(y_u8).long()

    torch.manual_seed(SEED)
    net = dt.build(layers, dropout_seed=DROPOUT_SEED)
    init_sd = clone_sd(net)
    drops = dropout_layers(net)

    # One step: the first training-mode forward (dropout step t = 1), backward, Adam.
    opt = M.make_optimizer(net, adam_eps)
    dt.set_dropout_step(net, 1)
    opt.zero_grad()
    logits = net(x)
    loss = M.loss_fn(logits, y)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in net.named_parameters()}
    opt.step()
    step1 = clone_sd(net)
    weights_round_trip(net, layers, opt)

    # Ten steps from init with a fresh Adam; step t uses the dropout masks of t.
    net2 = dt.build(layers, dropout_seed=DROPOUT_SEED)
    net2.load_state_dict(init_sd, strict=True)
    opt2 = M.make_optimizer(net2, adam_eps)
    drops2 = dropout_layers(net2)
    losses, masks = [], {d.layer_index: [] for d in drops2}
    for t in range(1, N_STEPS + 1):
        dt.set_dropout_step(net2, t)
        opt2.zero_grad()
        z = net2(x)
        if t == 1 and not torch.equal(z, logits):
            fail("the first forward pass differs between runs")
        step_loss = M.loss_fn(z, y)
        step_loss.backward()
        losses.append(step_loss.item())
        opt2.step()
        for d in drops2:
            masks[d.layer_index].append(d.last_keep.astype(np.uint8))
        if t == 1:
            for k, v in net2.state_dict().items():
                if not torch.equal(v, step1[k]):
                    fail("step1 mismatch between runs for %s" % k)
            for d, d2 in zip(drops, drops2):
                if not np.array_equal(d.last_keep, d2.last_keep):
                    fail("the dropout masks of step 1 differ between runs")
    state10 = clone_sd(net2)
    net2.eval()
    with torch.no_grad():
        eval_logits = net2(x)
    losses = np.array(losses, dtype=np.float32)
    if losses[0] != np.float32(loss.item()):
        fail("losses[0]=%r != loss=%r" % (losses[0], loss.item()))
    if not np.all(np.isfinite(losses)) or not torch.isfinite(eval_logits).all():
        fail("non-finite losses %s or evaluation logits" % losses)
    for d in drops2:
        kept = np.mean(masks[d.layer_index])
        if abs(kept - (1 - d.p)) > 0.02:
            fail("dropout layer %d kept %.3f of its elements, expected about %.2f" % (d.layer_index, kept, 1 - d.p))
    masks = {L: np.stack(m) for L, m in masks.items()}

    # How far PyTorch agrees with itself: the same fixture under OpenBLAS's
    # other kernels (each rounds its products differently). A trajectory that
    # rounding makes chaotic (the bn network's, by step 5) is compared within
    # that spread, not a tolerance that PyTorch itself would fail.
    spread = None
    if not args.no_spread:
        import subprocess
        spread = {"losses": np.zeros(N_STEPS, dtype=np.float32), "eval_logits": 0.0,
                  "state10": 0.0}
        for core in ("Haswell", "SkylakeX"):
            other = os.path.abspath(args.out) + ".%s.tmp" % core
            env = dict(os.environ, OPENBLAS_CORETYPE=core)
            subprocess.run([sys.executable, os.path.abspath(__file__), "--model", args.model,
                            "--data", args.data, "--no-spread", other], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            with h5py.File(other, "r") as g:
                spread["losses"] = np.maximum(spread["losses"], np.abs(g["losses"][...] - losses))
                spread["eval_logits"] = max(spread["eval_logits"], float(np.max(np.abs(
                    g["eval_logits"][...] - np32(eval_logits)))))
                for k, v in state10.items():
                    if v.dtype != torch.int64 and ("running" in k):
                        spread["state10"] = max(spread["state10"], float(np.max(np.abs(
                            g["state10/" + k][...] - np32(v)))))
            os.unlink(other)
        print("PyTorch across OpenBLAS kernels: losses differ by up to %s; evaluation logits by "
              "%.2e; running statistics by %.2e"
              % (" ".join("%.1e" % v for v in spread["losses"]), spread["eval_logits"],
                 spread["state10"]))

    out = os.path.abspath(args.out)
    tmp_out = out + ".tmp"
    try:
        with h5py.File(tmp_out, "w") as f:
            f.create_dataset("x", data=x_u8, dtype=np.uint8)
            if spread is not None:
                f.create_dataset("spread/losses", data=spread["losses"])
                f.attrs["spread_eval_logits"] = np.float64(spread["eval_logits"])
                f.attrs["spread_running"] = np.float64(spread["state10"])
            f.create_dataset("y", data=y_u8, dtype=np.uint8)
            dt.write_state_dict(f.create_group("init"), init_sd)
            f.create_dataset("logits", data=np32(logits))
            f.create_dataset("loss", data=np.array([loss.item()], dtype=np.float32))
            g = f.create_group("grad")
            for k, v in grads.items():
                g.create_dataset(k, data=np32(v))
            dt.write_state_dict(f.create_group("step1"), step1)
            f.create_dataset("losses", data=losses)
            dt.write_state_dict(f.create_group("state10"), state10)
            f.create_dataset("eval_logits", data=np32(eval_logits))
            if masks:
                g = f.create_group("masks")
                for L, m in masks.items():
                    g.create_dataset(str(L), data=m)
            f.attrs["model"] = dt.canonical_text(layers)
            f.attrs["lr"] = np.float64(M.LR)
            f.attrs["beta1"] = np.float64(M.BETA1)
            f.attrs["beta2"] = np.float64(M.BETA2)
            f.attrs["eps"] = np.float64(adam_eps)
            f.attrs["micro_batch"] = np.int64(n)
            f.attrs["dropout_seed"] = np.int64(DROPOUT_SEED)
            f.attrs["torch_version"] = str(torch.__version__)
            f.attrs["torch_seed"] = np.int64(SEED)
            f.attrs["openblas_coretype"] = os.environ["OPENBLAS_CORETYPE"]
            f.attrs["num_threads"] = np.int64(1)
            f.attrs["source"] = source
            f.attrs["generator"] = "tests/golden/gen_golden.py --model %s" % args.model
        size = verify_network_fixture(tmp_out, net, n, x_u8.shape, masks, losses,
                                      spread is not None)
        os.replace(tmp_out, out)
    finally:
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)

    print("torch %s, seed %d, threads 1, OpenBLAS %s, %s: %d samples"
          % (torch.__version__, SEED, os.environ["OPENBLAS_CORETYPE"], args.model, n))
    print("losses[0..9] = %s" % " ".join("%.6f" % v for v in losses))
    print("wrote %s (%d bytes, %.2f MB)" % (out, size, size / 1e6))


def verify_network_fixture(path, net, n, x_shape, masks, losses, with_spread):
    """Every expected dataset, with its shape and type, and nothing else; the size."""
    sd = net.state_dict()
    params = [k for k, _ in net.named_parameters()]
    expect = {"x": (x_shape, np.uint8), "y": ((n,), np.uint8), "logits": ((n, 10), np.float32),
              "loss": ((1,), np.float32), "losses": ((N_STEPS,), np.float32),
              "eval_logits": ((n, 10), np.float32)}
    for grp in ("init", "step1", "state10"):
        for k, v in sd.items():
            expect[grp + "/" + k] = ((), np.int64) if v.dtype == torch.int64 else (tuple(v.shape), np.float32)
    for k in params:
        expect["grad/" + k] = (tuple(sd[k].shape), np.float32)
    for L, m in masks.items():
        expect["masks/%d" % L] = (m.shape, np.uint8)
    if with_spread:
        expect["spread/losses"] = ((N_STEPS,), np.float32)
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, (obj.shape, obj.dtype))
                     if isinstance(obj, h5py.Dataset) else None)
        if f["loss"][0] != losses[0]:
            fail("written loss mismatch")
    if set(found) != set(expect):
        fail("datasets %s missing, %s unexpected" % (sorted(set(expect) - set(found)),
                                                     sorted(set(found) - set(expect))))
    for name, (shape, dtype) in expect.items():
        if found[name] != (tuple(shape), np.dtype(dtype)):
            fail("%s is %s %s, expected %s %s" % (name, found[name][1], found[name][0], dtype.__name__, shape))
    size = os.path.getsize(path)
    if size > FIXTURE_MAX_BYTES:
        fail("%s is %d bytes (> %d)" % (path, size, FIXTURE_MAX_BYTES))
    return size


if __name__ == "__main__":
    main()
