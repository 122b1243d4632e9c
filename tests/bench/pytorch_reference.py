#!/usr/bin/python3
"""PyTorch reference trainer for dpcnn speed/accuracy comparisons.

The network is a dpcnn model description (--model NAME|FILE, default the
tutorial network; built by launch/dpcnn_torch.py with PyTorch's default init and
torch's own dropout); loss, optimizer and pixel scaling as tests/golden/model.py:
Adam(lr=0.01, betas=(0.9,0.999), eps=1e-8), cross-entropy (mean), pixels
uint8/255, then with --normalize MEAN,STD[,MEAN,STD...] (x - mean) / std per
channel, as torchvision's Normalize and dpcnn's --normalize. --data is an
MNIST-format directory (default Fashion-MNIST) or a dpcnn data file (.h5).

The whole data set is preloaded into tensors before timing; per epoch only the
training loop (shuffle index + forward/backward/step over all batches) is timed.
Evaluation on the 10,000 test images is not timed.

Output: one line per epoch, then
  RESULT samples_per_second=<all epochs' samples / all epochs' train seconds> test_accuracy=<after last epoch>
"""
import argparse
import os
import sys


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch reference trainer for dpcnn's networks.")
    ap.add_argument("--model", default="tutorial", metavar="NAME|FILE",
                    help="a built-in network (tutorial, bn, lenet5) or a description file (default tutorial)")
    ap.add_argument("--normalize", default="none", metavar="MEAN,STD[,...]|none",
                    help="(x/255 - mean) / std per channel after scaling (default none)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--no-shuffle", action="store_true", help="train in file order every epoch")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training samples (0 = all)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="MNIST-format directory or dpcnn data file (default %(default)s)")
    ap.add_argument("--save", metavar="FILE.h5", help="write final weights in dpcnn HDF5 layout")
    args = ap.parse_args()
    if args.epochs < 1 or args.threads < 1 or args.batch_size < 1 or args.limit < 0:
        ap.error("--epochs, --threads, --batch-size must be >= 1 and --limit >= 0")
    return args


ARGS = parse_args()
# Must happen before torch (and its OpenBLAS) is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import time  # noqa: E402

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "launch"))
import dpcnn_torch  # noqa: E402
import model as M  # noqa: E402


def load_data(data):
    """(train images, train labels, test images, test labels, classes), the
    arrays uint8, from an MNIST-format directory or a dpcnn data file."""
    if os.path.isfile(data):
        tr_img, tr_lab, names = dpcnn_torch.read_data(data, "train")
        te_img, te_lab, _ = dpcnn_torch.read_data(data, "test")
        return tr_img, tr_lab, te_img, te_lab, len(names)
    return M.load_fashion_mnist(data, "train") + M.load_fashion_mnist(data, "t10k") + (10,)


def main(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        layers = dpcnn_torch.parse_named(args.model)
        normalize = dpcnn_torch.parse_normalize(args.normalize)
    except ValueError as e:   # DescriptionError is one
        sys.exit("pytorch_reference: %s" % e)

    tr_img, tr_lab, te_img, te_lab, classes = load_data(args.data)
    if args.limit:
        tr_img, tr_lab = tr_img[:args.limit], tr_lab[:args.limit]
    try:
        dpcnn_torch.infer_shapes(layers, dpcnn_torch.sample_shape(tr_img), classes, args.model)
        x_train = dpcnn_torch.to_input(tr_img, normalize)    # [N,C,H,W] float32
    except ValueError as e:
        sys.exit("pytorch_reference: %s" % e)
    y_train = torch.from_numpy(tr_lab).long()
    n = x_train.shape[0]
    bs = args.batch_size

    net = dpcnn_torch.build(layers)
    opt = M.make_optimizer(net)
    gen = torch.Generator()
    gen.manual_seed(args.seed)

    extra = "" if args.model == "tutorial" else " model=%s" % args.model
    extra += "" if normalize is None else " normalize=%s" % args.normalize
    print("pytorch_reference: torch %s threads=%d OPENBLAS_NUM_THREADS=%s seed=%d batch=%d train=%d shuffle=%s%s"
          % (torch.__version__, torch.get_num_threads(), os.environ.get("OPENBLAS_NUM_THREADS"),
             args.seed, bs, n, "no" if args.no_shuffle else "yes", extra), flush=True)

    total_time = 0.0
    total_samples = 0
    acc = float("nan")
    for epoch in range(1, args.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        if args.no_shuffle:
            order = None
        else:
            order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, bs):
            if order is None:
                xb, yb = x_train[i:i + bs], y_train[i:i + bs]
            else:
                idx = order[i:i + bs]
                xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad()
            loss = M.loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * yb.shape[0]
        dt = time.perf_counter() - t0
        total_time += dt
        total_samples += n
        _, acc = dpcnn_torch.evaluate(net, te_img, te_lab, normalize)
        print("epoch %d train_loss=%.6f train_seconds=%.3f samples_per_second=%.1f test_accuracy=%.4f"
              % (epoch, loss_sum / n, dt, n / dt, acc), flush=True)

    if args.save:
        dpcnn_torch.save_weights(args.save, net, layers)
        print("saved weights to %s" % args.save)
    print("RESULT samples_per_second=%.1f test_accuracy=%.4f" % (total_samples / total_time, acc))


if __name__ == "__main__":
    main(ARGS)
