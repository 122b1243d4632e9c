#!/usr/bin/python3
"""Load a dpcnn weights file (HDF5, one float32 root dataset per state_dict key)
into the reference PyTorch model with strict=True; optionally evaluate it.

Usage: /usr/bin/python3 tests/golden/check_weights.py FILE.h5 [--eval] [--optimizer] [--data DIR]

With --optimizer, also load a checkpoint's Adam state into torch.optim.Adam and
take one step with it (the layout README.md documents).

Exit status: 0 ok; 1 bad/unreadable weights file (missing/extra/misshapen keys,
wrong dtype, non-finite values); 2 usage error.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import model as M  # noqa: E402


def die(msg):
    print("check_weights: ERROR: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description="Check a dpcnn HDF5 weights file against the PyTorch model.")
    ap.add_argument("file", help="dpcnn weights file (.h5)")
    ap.add_argument("--eval", action="store_true", help="print test accuracy on the 10,000 test images")
    ap.add_argument("--data", default=M.DEFAULT_DATA_DIR, help="Fashion-MNIST directory (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --eval (default 1)")
    ap.add_argument("--optimizer", action="store_true",
                    help="also load the checkpoint's Adam state into torch.optim.Adam")
    args = ap.parse_args()

    if not os.path.isfile(args.file):
        die("%s: no such file" % args.file)
    try:
        with h5py.File(args.file, "r") as f:
            problems = []
            for k in f.keys():
                obj = f[k]
                if isinstance(obj, h5py.Group):
                    if k != "optimizer":
                        problems.append("unexpected group %r at root" % k)
                elif obj.dtype != np.float32:
                    problems.append("dataset %r has dtype %s, expected float32" % (k, obj.dtype))
        sd = M.load_h5_state_dict(args.file)
    except OSError as e:
        die("%s: cannot read HDF5: %s" % (args.file, e))

    problems += M.check_state_dict(sd)
    for k, v in sd.items():
        if not torch.isfinite(v).all():
            problems.append("key %r contains non-finite values" % k)
    if problems:
        die("%s: not a valid dpcnn weights file:\n  " % args.file + "\n  ".join(problems))

    net = M.Network()
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # belt and braces; check_state_dict should catch everything
        die("%s: load_state_dict(strict=True) failed: %s" % (args.file, e))
    n_params = sum(v.numel() for v in sd.values())
    print("ok: %s loaded (%d tensors, %d parameters)" % (args.file, len(sd), n_params))

    if args.eval:
        torch.set_num_threads(args.threads)
        images, labels = M.load_fashion_mnist(args.data, "t10k")
        acc = M.evaluate(net, images, labels)
        print("test_accuracy=%.4f" % acc)

    if args.optimizer:
        try:
            opt = M.load_h5_optimizer(args.file, net)
        except (KeyError, OSError, ValueError, RuntimeError) as e:
            die("%s: cannot load the optimizer state: %s" % (args.file, e))
        step = int(opt.state_dict()["state"][0]["step"].item())
        images, labels = M.load_fashion_mnist(args.data, "train")
        x, y = M.to_input(images[:100]), torch.from_numpy(labels[:100]).long()
        opt.zero_grad()
        M.loss_fn(net(x), y).backward()
        opt.step()
        print("ok: Adam state loaded (step %d) and stepped once (now %d)"
              % (step, int(opt.state_dict()["state"][0]["step"].item())))


if __name__ == "__main__":
    main()
