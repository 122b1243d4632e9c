"""Reference PyTorch model and helpers shared by the dpcnn golden/bench scripts.

The network is the classic PyTorch tutorial CNN for Fashion-MNIST:
  conv1 = Conv2d(1,6,5); conv2 = Conv2d(6,12,5)
  fc1 = Linear(192,120); fc2 = Linear(120,60); out = Linear(60,10)
Loss: F.cross_entropy (mean); optimizer: Adam(lr=0.01, betas=(0.9,0.999), eps=1e-8).
Pixels: uint8 / 255 as float32, input shape [N,1,28,28].
"""
import gzip
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LR = 0.01
BETA1 = 0.9
BETA2 = 0.999
EPS = 1e-8

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"

# state_dict keys in order, with shapes
PARAM_SHAPES = [
    ("conv1.weight", (6, 1, 5, 5)),
    ("conv1.bias", (6,)),
    ("conv2.weight", (12, 6, 5, 5)),
    ("conv2.bias", (12,)),
    ("fc1.weight", (120, 192)),
    ("fc1.bias", (120,)),
    ("fc2.weight", (60, 120)),
    ("fc2.bias", (60,)),
    ("out.weight", (10, 60)),
    ("out.bias", (10,)),
]
PARAM_NAMES = [k for k, _ in PARAM_SHAPES]


class Network(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5)
        self.fc1 = nn.Linear(in_features=12 * 4 * 4, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=60)
        self.out = nn.Linear(in_features=60, out_features=10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), kernel_size=2, stride=2)
        x = F.max_pool2d(F.relu(self.conv2(x)), kernel_size=2, stride=2)
        x = x.reshape(-1, 12 * 4 * 4)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.out(x)

    def forward_layers(self, x):
        """Forward pass returning intermediate (pre-ReLU conv/fc) outputs."""
        r = {}
        c1 = self.conv1(x)
        r["conv1_out"] = c1
        p1 = F.max_pool2d(F.relu(c1), kernel_size=2, stride=2)
        r["pool1_out"] = p1
        c2 = self.conv2(p1)
        r["conv2_out"] = c2
        p2 = F.max_pool2d(F.relu(c2), kernel_size=2, stride=2)
        r["pool2_out"] = p2
        f1 = self.fc1(p2.reshape(-1, 12 * 4 * 4))
        r["fc1_out"] = f1
        f2 = self.fc2(F.relu(f1))
        r["fc2_out"] = f2
        r["logits"] = self.out(F.relu(f2))
        return r


def make_optimizer(model, eps=EPS):
    return torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=eps)


def loss_fn(logits, labels):
    return F.cross_entropy(logits, labels)


def to_input(images_u8):
    """uint8 [N,28,28] (numpy or tensor) -> float32 tensor [N,1,28,28] in [0,1] (ToTensor-like)."""
    t = torch.as_tensor(np.ascontiguousarray(images_u8)) if not torch.is_tensor(images_u8) else images_u8
    if t.dtype != torch.uint8:
        raise TypeError("expected uint8 images, got %s" % t.dtype)
    return t.reshape(-1, 1, 28, 28).float().div(255)


# ---------------------------------------------------------------- IDX reader

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim


def _open_maybe_gz(path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path, expected_magic=None):
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy uint8 array."""
    with _open_maybe_gz(path) as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError("%s: too short for an IDX header" % path)
    magic = int.from_bytes(data[0:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError("%s: bad IDX magic 0x%08x" % (path, magic))
    if data[2] != 0x08:
        raise ValueError("%s: unsupported IDX element type 0x%02x (want 0x08 ubyte)" % (path, data[2]))
    if expected_magic is not None and magic != expected_magic:
        raise ValueError("%s: IDX magic 0x%08x, expected 0x%08x" % (path, magic, expected_magic))
    ndim = data[3]
    hdr = 4 + 4 * ndim
    if len(data) < hdr:
        raise ValueError("%s: truncated IDX header" % path)
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims)) if dims else 1
    if len(data) - hdr != n:
        raise ValueError("%s: IDX payload is %d bytes, header says %d" % (path, len(data) - hdr, n))
    return np.frombuffer(data, dtype=np.uint8, count=n, offset=hdr).reshape(dims).copy()


def read_idx_images(path):
    a = read_idx(path, IDX_IMAGES_MAGIC)
    if a.shape[1:] != (28, 28):
        raise ValueError("%s: expected 28x28 images, got %s" % (path, a.shape))
    return a


def read_idx_labels(path):
    a = read_idx(path, IDX_LABELS_MAGIC)
    if a.size and a.max() > 9:
        raise ValueError("%s: label out of range (max %d)" % (path, a.max()))
    return a


def load_fashion_mnist(data_dir=DEFAULT_DATA_DIR, split="train"):
    """Return (images uint8 [N,28,28], labels uint8 [N]) for split 'train' or 't10k'/'test'."""
    prefix = {"train": "train", "t10k": "t10k", "test": "t10k"}[split]

    def find(stem):
        for name in (stem + ".gz", stem):
            p = os.path.join(data_dir, name)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(os.path.join(data_dir, stem + ".gz"))

    images = read_idx_images(find(prefix + "-images-idx3-ubyte"))
    labels = read_idx_labels(find(prefix + "-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError("image/label count mismatch: %d vs %d" % (images.shape[0], labels.shape[0]))
    return images, labels


# ---------------------------------------------------------------- HDF5 weights

def load_h5_state_dict(path):
    """Read a dpcnn weights file (root float32 datasets named by state_dict key)
    into a dict of float32 tensors. All root datasets are returned (no key
    validation here; use model.load_state_dict(..., strict=True) for that)."""
    import h5py
    sd = {}
    with h5py.File(path, "r") as f:
        for k in f.keys():
            obj = f[k]
            if not isinstance(obj, h5py.Dataset):
                continue
            sd[k] = torch.from_numpy(np.asarray(obj[()], dtype=np.float32).copy())
    return sd


def save_h5_state_dict(state_dict, path):
    """Write a state_dict in the dpcnn weights layout (root float32 datasets)."""
    import h5py
    with h5py.File(path, "w") as f:
        for k, v in state_dict.items():
            f.create_dataset(k, data=v.detach().cpu().numpy().astype(np.float32))


def save_h5_checkpoint(model, opt, path):
    """Write model and Adam state in the dpcnn checkpoint layout (what
    launch/dpcnn_torch.py's load_adam, README.md's snippet, reads); used for the
    round trip in gen_golden.py."""
    import h5py
    names = [k for k, _ in model.named_parameters()]
    st = opt.state_dict()
    with h5py.File(path, "w") as f:
        for k, v in model.state_dict().items():
            f.create_dataset(k, data=v.detach().numpy().astype(np.float32))
        g = f.create_group("optimizer")
        for i, k in enumerate(names):
            g.create_dataset("exp_avg/" + k, data=st["state"][i]["exp_avg"].numpy())
            g.create_dataset("exp_avg_sq/" + k, data=st["state"][i]["exp_avg_sq"].numpy())
        group = st["param_groups"][0]
        g.attrs["step"] = int(st["state"][0]["step"].item())
        g.attrs["lr"] = group["lr"]
        g.attrs["beta1"], g.attrs["beta2"] = group["betas"]
        g.attrs["eps"] = group["eps"]


def check_state_dict(sd):
    """Return a list of human-readable problems (missing/extra/misshapen keys)."""
    problems = []
    expected = dict(PARAM_SHAPES)
    for k in PARAM_NAMES:
        if k not in sd:
            problems.append("missing key %r (expected shape %s)" % (k, list(expected[k])))
        elif tuple(sd[k].shape) != expected[k]:
            problems.append("key %r has shape %s, expected %s" % (k, list(sd[k].shape), list(expected[k])))
    for k in sd:
        if k not in expected:
            problems.append("unexpected key %r (shape %s)" % (k, list(sd[k].shape)))
    return problems


@torch.no_grad()
def evaluate(model, images_u8, labels_u8, batch_size=1000):
    """Accuracy of model on uint8 images/labels."""
    model.eval()
    correct = 0
    n = images_u8.shape[0]
    x_all = to_input(images_u8)
    y_all = torch.as_tensor(np.asarray(labels_u8)).long() if not torch.is_tensor(labels_u8) else labels_u8.long()
    for i in range(0, n, batch_size):
        pred = model(x_all[i:i + batch_size]).argmax(dim=1)
        correct += int((pred == y_all[i:i + batch_size]).sum())
    model.train()
    return correct / n
