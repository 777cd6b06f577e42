"""Train a randomly initialised torchvision ResNet-18 on PneumoniaMNIST (MedMNIST v2) on a CPU.

This is the benchmark behind the Lab 2 training recipe. The default arguments are the
recommended recipe; the flags let you run the variants that were compared against it.

Data: ``../shared/data/pneumoniamnist.npz`` beside the project (28x28 grayscale pediatric chest X-rays,
label 0 = normal, 1 = pneumonia; 4,690 train / 524 val / 624 test images). All images are
preloaded as one float tensor, so there is no DataLoader and no per-image Python work.

Protocol:

* the validation split picks the epoch (best validation ROC AUC, ties to the later epoch)
  and the decision threshold (Youden's J on the validation ROC curve);
* the test split is only used once, for the final numbers: ROC AUC, and accuracy and
  Cohen's kappa at the validation-chosen threshold (and, for reference, at 0.5).

Augmentation is done on whole batches with ``F.affine_grid``/``F.grid_sample`` (one random
rotation / scale / translation per image), which on a 2-core CPU is much cheaper than
running torchvision transforms image by image in DataLoader workers.

Examples (from the course root)::

    .venv/bin/python benchmarks/pneumonia_recipe.py                    # the recipe, seed 0
    .venv/bin/python benchmarks/pneumonia_recipe.py --seeds 0 1 2      # robustness check
    .venv/bin/python benchmarks/pneumonia_recipe.py --size 56 --epochs 3 --tag s56
    .venv/bin/python benchmarks/pneumonia_recipe.py --balance sampler --no-aug

A JSON with the configuration, per-epoch history and final metrics of every seed is
written to ``benchmarks/results/pneumonia-<tag>-<date>-<time>.json`` (git-ignored).
"""

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve

# The read-only offline copy beside the project (../shared/data).
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--size", type=int, default=28,
                   help="input side length (28 = native; larger is bilinear upsampling)")
    p.add_argument("--stem", choices=["standard", "cifar", "cifar-pool"], default="standard",
                   help="standard: 7x7/2 conv + maxpool; cifar: 3x3/1 conv, no maxpool; "
                        "cifar-pool: 3x3/1 conv + maxpool")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of OneCycleLR")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--balance", choices=["none", "weights", "sampler"], default="weights",
                   help="class imbalance: none, class-weighted cross-entropy, or "
                        "class-balanced sampling with replacement")
    p.add_argument("--no-aug", action="store_true", help="no augmentation")
    p.add_argument("--rotate", type=float, default=10.0, help="max rotation, degrees")
    p.add_argument("--translate", type=float, default=0.08,
                   help="max translation, fraction of the image side")
    p.add_argument("--scale", type=float, nargs=2, default=(0.9, 1.1), metavar=("MIN", "MAX"))
    p.add_argument("--hflip", action="store_true", help="also flip horizontally (p=0.5)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for training")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-last", action="store_true",
                   help="use the last epoch instead of the best validation epoch")
    p.add_argument("--tag", default="recipe", help="name used in the JSON file name")
    p.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def load_split(npz, split, size):
    """Images as a float tensor (N, 1, size, size) scaled to [0, 1]; labels as int64 (N,)."""
    x = torch.from_numpy(npz[f"{split}_images"]).float().div_(255.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=False)
    y = torch.from_numpy(npz[f"{split}_labels"].reshape(-1).astype(np.int64))
    return x, y


def random_affine(x, rotate, translate, scale, hflip, generator):
    """One random rotation/scale/translation (and optional h-flip) per image of a batch."""
    n = x.shape[0]
    u = lambda: torch.rand(n, generator=generator)  # noqa: E731
    angle = (u() * 2 - 1) * math.radians(rotate)
    s = scale[0] + u() * (scale[1] - scale[0])
    tx = (u() * 2 - 1) * translate * 2  # affine_grid coordinates span [-1, 1]
    ty = (u() * 2 - 1) * translate * 2
    flip = torch.where(u() < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------- model
def make_model(stem):
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    if stem == "standard":
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if stem == "cifar":
            model.maxpool = nn.Identity()
    return model


@torch.no_grad()
def predict(model, x, batch_size=512, channels_last=False):
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(model(xb).float(), 1)[:, 1])
    return torch.cat(out).numpy()


def youden_threshold(y, p):
    fpr, tpr, thr = roc_curve(y, p)
    return float(thr[np.argmax(tpr - fpr)])


def metrics_at(y, p, thr):
    pred = (p >= thr).astype(int)
    return {"accuracy": float((pred == y).mean()), "kappa": float(cohen_kappa_score(y, pred))}


# ------------------------------------------------------------------------- training
def train_one_seed(args, seed, data):
    (xtr, ytr), (xva, yva), (xte, yte) = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model(args.stem)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    counts = torch.bincount(ytr, minlength=2).float()
    class_w = counts.sum() / (2 * counts)  # "balanced" weights: normal ~1.93, pneumonia ~0.67
    loss_fn = nn.CrossEntropyLoss(weight=class_w if args.balance == "weights" else None,
                                  label_smoothing=args.label_smoothing)
    sample_w = class_w[ytr]

    steps = math.ceil(len(xtr) / args.batch_size)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                              weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps, pct_start=0.25)

    history, best = [], None
    t_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if args.balance == "sampler":
            order = torch.multinomial(sample_w, len(xtr), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(xtr), generator=gen)
        total, seen = 0.0, 0
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            xb, yb = xtr[idx], ytr[idx]
            if not args.no_aug:
                xb = random_affine(xb, args.rotate, args.translate, args.scale, args.hflip, gen)
            if args.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        t_train = time.perf_counter() - t0
        p_va = predict(model, xva, channels_last=args.channels_last)
        val_auc = float(roc_auc_score(yva.numpy(), p_va))
        t_epoch = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": total / seen, "val_auc": val_auc,
                        "train_s": t_train, "epoch_s": t_epoch})
        print(f"  seed {seed} epoch {epoch:2d}/{args.epochs}  loss {total / seen:.4f}  "
              f"val AUC {val_auc:.4f}  {t_train:5.1f}s train  {t_epoch:5.1f}s total", flush=True)
        if args.eval_last or best is None or val_auc >= best["val_auc"]:
            best = {"epoch": epoch, "val_auc": val_auc,
                    "state": copy.deepcopy(model.state_dict())}
    train_time = time.perf_counter() - t_start
    last_state = copy.deepcopy(model.state_dict())

    def final_metrics(state):
        model.load_state_dict(state)
        p_va = predict(model, xva, channels_last=args.channels_last)
        p_te = predict(model, xte, channels_last=args.channels_last)
        thr = youden_threshold(yva.numpy(), p_va)
        out = {"val_auc": float(roc_auc_score(yva.numpy(), p_va)),
               "test_auc": float(roc_auc_score(yte.numpy(), p_te)),
               "threshold": thr}
        out.update({f"test_{k}": v for k, v in metrics_at(yte.numpy(), p_te, thr).items()})
        out.update({f"test_{k}@0.5": v for k, v in metrics_at(yte.numpy(), p_te, 0.5).items()})
        return out

    result = {"seed": seed, "train_time_s": train_time, "best_epoch": best["epoch"],
              "history": history, "selected": final_metrics(best["state"]),
              "last_epoch": final_metrics(last_state)}
    s = result["selected"]
    print(f"  seed {seed}: {train_time:.0f}s  epoch {best['epoch']}  val AUC {s['val_auc']:.4f}  "
          f"TEST AUC {s['test_auc']:.4f}  acc {s['test_accuracy']:.4f}  "
          f"kappa {s['test_kappa']:.4f} (thr {s['threshold']:.3f}; "
          f"last-epoch test AUC {result['last_epoch']['test_auc']:.4f})", flush=True)
    return result


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as npz:
        data = tuple(load_split(npz, s, args.size) for s in ("train", "val", "test"))
    print(f"train {tuple(data[0][0].shape)}  val {tuple(data[1][0].shape)}  "
          f"test {tuple(data[2][0].shape)}  threads {torch.get_num_threads()}  "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print("config:", json.dumps({k: v for k, v in config.items() if k not in ("data", "output")}))

    runs = [train_one_seed(args, seed, data) for seed in args.seeds]
    aucs = [r["selected"]["test_auc"] for r in runs]
    summary = {
        "test_auc_mean": statistics.mean(aucs), "test_auc_min": min(aucs),
        "test_auc_max": max(aucs),
        "test_accuracy_mean": statistics.mean(r["selected"]["test_accuracy"] for r in runs),
        "test_kappa_mean": statistics.mean(r["selected"]["test_kappa"] for r in runs),
        "val_auc_mean": statistics.mean(r["selected"]["val_auc"] for r in runs),
        "train_time_s_mean": statistics.mean(r["train_time_s"] for r in runs),
        "epoch_s_mean": statistics.mean(h["epoch_s"] for r in runs for h in r["history"]),
    }
    print(f"SUMMARY {args.tag}: test AUC mean {summary['test_auc_mean']:.4f} "
          f"min {summary['test_auc_min']:.4f} max {summary['test_auc_max']:.4f} | "
          f"acc {summary['test_accuracy_mean']:.4f} kappa {summary['test_kappa_mean']:.4f} | "
          f"val AUC {summary['val_auc_mean']:.4f} | {summary['train_time_s_mean']:.0f}s/run, "
          f"{summary['epoch_s_mean']:.1f}s/epoch", flush=True)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.output or RESULTS_DIR / f"pneumonia-{args.tag}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": config, "summary": summary, "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "load_avg_end": os.getloadavg()},
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
