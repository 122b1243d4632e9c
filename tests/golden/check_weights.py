#!/usr/bin/python3
"""Load a dpcnn weights file or checkpoint (HDF5, one root dataset per
state_dict key) into its PyTorch network with strict=True; optionally evaluate it.

Usage: /usr/bin/python3 tests/golden/check_weights.py FILE.h5 [--eval] [--optimizer]
           [--data DIR|FILE.h5] [--model NAME|FILE] [--normalize MEAN,STD[,...]]

The network is the file's own (its attribute 'model'; files without it hold the
tutorial network) unless --model names another; launch/dpcnn_torch.py builds it.
With --optimizer, also load a checkpoint's Adam state into torch.optim.Adam and
take one step with it (the layout README.md documents).

Exit status: 0 ok; 1 bad/unreadable weights file (missing/extra/misshapen keys,
wrong dtype, non-finite values, a description that does not parse); 2 usage error.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "launch"))

import h5py  # noqa: E402
import torch  # noqa: E402

import dpcnn_torch as dt  # noqa: E402
import model as M  # noqa: E402


def die(msg):
    print("check_weights: ERROR: " + msg, file=sys.stderr)
    sys.exit(1)


def load_split(data, split):
    """(images uint8, labels uint8) from a dpcnn data file or an MNIST-format directory."""
    if os.path.isfile(data):
        images, labels, _ = dt.read_data(data, "train" if split == "train" else "test")
        return images, labels
    return M.load_fashion_mnist(data, "train" if split == "train" else "t10k")


def main():
    ap = argparse.ArgumentParser(description="Check a dpcnn HDF5 weights file against its PyTorch network.")
    ap.add_argument("file", help="dpcnn weights file or checkpoint (.h5)")
    ap.add_argument("--eval", action="store_true", help="print test accuracy on the test images")
    ap.add_argument("--data", default=M.DEFAULT_DATA_DIR,
                    help="MNIST-format directory or dpcnn data file (default %(default)s)")
    ap.add_argument("--model", metavar="NAME|FILE", help="the network, if not the file's own")
    ap.add_argument("--normalize", default="none", help="for --eval: as dpcnn's --normalize (default none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --eval (default 1)")
    ap.add_argument("--optimizer", action="store_true",
                    help="also load the checkpoint's Adam state into torch.optim.Adam")
    args = ap.parse_args()
    try:
        normalize = dt.parse_normalize(args.normalize)
    except ValueError as e:
        ap.error(str(e))

    if not os.path.isfile(args.file):
        die("%s: no such file" % args.file)
    try:
        with h5py.File(args.file, "r") as f:
            groups = [k for k in f.keys() if isinstance(f[k], h5py.Group) and k != "optimizer"]
        if groups:
            die("%s: not a valid dpcnn weights file:\n  unexpected group(s) %s at the root" % (args.file, groups))
        description = dt.description_text(args.model)[0] if args.model else None
        net, layers = dt.load_checkpoint(args.file, description)
    except OSError as e:
        die("%s: cannot read HDF5: %s" % (args.file, e))
    except dt.CheckpointError as e:
        die("not a valid dpcnn weights file: %s" % e)
    except dt.DescriptionError as e:
        die(str(e))
    sd = net.state_dict()
    n_params = sum(p.numel() for p in net.parameters())
    print("ok: %s loaded (%d tensors, %d parameters)" % (args.file, len(sd), n_params))

    if args.eval:
        torch.set_num_threads(args.threads)
        images, labels = load_split(args.data, "test")
        try:
            dt.infer_shapes(layers, dt.sample_shape(images), 10)
            _, acc = dt.evaluate(net, images, labels, normalize)
        except ValueError as e:   # a network that does not fit the data, a bad --normalize
            die(str(e))
        print("test_accuracy=%.4f" % acc)

    if args.optimizer:
        try:
            opt = dt.load_adam(args.file, net)
        except (KeyError, OSError, ValueError, RuntimeError) as e:
            die("%s: cannot load the optimizer state: %s" % (args.file, e))
        step = int(opt.state_dict()["state"][0]["step"].item())
        images, labels = load_split(args.data, "train")
        x, y = dt.to_input(images[:100], normalize), torch.from_numpy(labels[:100]).long()
        net.train()
        opt.zero_grad()
        M.loss_fn(net(x), y).backward()
        opt.step()
        print("ok: Adam state loaded (step %d) and stepped once (now %d)"
              % (step, int(opt.state_dict()["state"][0]["step"].item())))


if __name__ == "__main__":
    main()
