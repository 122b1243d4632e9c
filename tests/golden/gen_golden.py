#!/usr/bin/python3
"""Generate the dpcnn golden fixture (tests/golden/golden.h5) with PyTorch.

Usage: /usr/bin/python3 tests/golden/gen_golden.py [OUT.h5] [--data DIR]

Layout of the output (all float32 unless noted):
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
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

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


def optimizer_round_trip(net, opt):
    """The checkpoint layout for Adam's state: write it, read it back with the
    loader README.md documents, and check every moment and the step survive."""
    fd, tmp = tempfile.mkstemp(suffix=".h5", prefix="dpcnn_opt_")
    os.close(fd)
    try:
        M.save_h5_checkpoint(net, opt, tmp)
        fresh = M.Network()
        fresh.load_state_dict(M.load_h5_state_dict(tmp), strict=True)
        back = M.load_h5_optimizer(tmp, fresh)
        a, b = opt.state_dict(), back.state_dict()
        for i in a["state"]:
            for k in ("exp_avg", "exp_avg_sq", "step"):
                if not torch.equal(a["state"][i][k], b["state"][i][k]):
                    fail("optimizer round trip: %s of parameter %d differs" % (k, i))
        for k in ("lr", "betas", "eps"):
            if a["param_groups"][0][k] != b["param_groups"][0][k]:
                fail("optimizer round trip: %s differs" % k)
    finally:
        os.unlink(tmp)
    print("optimizer round trip: OK (Adam state of %d tensors)" % len(a["state"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "golden.h5"))
    ap.add_argument("--data", default=M.DEFAULT_DATA_DIR)
    ap.add_argument("--layer-samples", type=int, default=10,
                    help="store layers/* for only the first K samples of the batch (default 10, which keeps the committed file under 1 MB)")
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
