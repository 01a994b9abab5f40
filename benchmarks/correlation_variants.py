"""Which correlation module learns useful correlations? Fit variants on a source network.

For each variant the module is fitted on source train (network frozen, as in the correlation
stage) and scored as "network + module" on the *source* val split, which has labels in any
real UDA setting, and on a labelled --tune split when given, so a variant can be chosen there
without touching target val. Target val is printed too, for information only.

A "+perturbed" variant fits the module on the network's predictions of strongly augmented
source images (colour jitter 0.5, blur): predictions with errors, as on the target, where a
module fitted on clean crops only sees an almost perfect network.

    python benchmarks/correlation_variants.py --checkpoint runs/ablation/seed0/base/source/last.pt \\
        --data runs/ablation-data --iterations 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import torch

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform, TrainTransform
from uda_adapt.adapt.evaluation import evaluate
from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.mixing import StrongAugmentation
from uda_adapt.adapt.models.correlation import CorrelationModule
from uda_adapt.adapt.train.batches import BatchStream

VARIANTS = {
    "prediction/none": dict(value="prediction", spatial="none"),
    "prediction/posenc": dict(value="prediction", spatial="posenc"),
    "prediction/conv3x3": dict(value="prediction", spatial="conv3x3"),
    "learned/none": dict(value="learned", spatial="none"),
    "learned/conv3x3": dict(value="learned", spatial="conv3x3"),
    "learned/posenc": dict(value="learned", spatial="posenc"),
}
PERTURBED = "+perturbed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a source-stage checkpoint")
    parser.add_argument("--data", required=True, help="benchmark root with source/ and target/")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=[*VARIANTS, *(v + PERTURBED for v in VARIANTS)])
    parser.add_argument("--tune", default=None, help="labelled folder dataset (its val split) to score on as well")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(args.checkpoint)
    network = build_model(ckpt).requires_grad_(False)
    evaluation = EvalTransform(mean=ckpt.mean, std=ckpt.std)
    source_val = open_dataset("folder", f"{args.data}/source", "val", require_labels=True, transform=evaluation)
    target_val = open_dataset("folder", f"{args.data}/target", "val", require_labels=True, transform=evaluation)
    train_set = open_dataset("folder", f"{args.data}/source", "train", require_labels=True,
                             transform=TrainTransform(crop_size=(128, 256), scale_range=(0.75, 1.25), jitter=0.2, mean=ckpt.mean, std=ckpt.std))

    splits = {"source_val": source_val, "target_val": target_val}
    if args.tune:
        splits["tune"] = open_dataset("folder", args.tune, "val", require_labels=True, transform=evaluation)

    def score(fn):
        return {name: evaluate(fn, dataset, progress=False).miou for name, dataset in splits.items()}

    def show(key, scores, seconds=""):
        print(f"{key:36s} " + "  ".join(f"{100 * scores[k]:10.1f}" for k in splits) + f"  {seconds}", flush=True)

    results = {"network": score(network)}
    print(f"{'variant':36s} " + "  ".join(f"{k:>10s}" for k in splits) + "  seconds")
    show("network alone", results["network"])
    perturb = StrongAugmentation(ckpt.mean, ckpt.std, jitter_strength=0.5, jitter_p=1.0, blur_p=0.5)
    for name, lr in itertools.product(args.variants, args.lrs):
        torch.manual_seed(0)
        perturbed = name.endswith(PERTURBED)
        module = CorrelationModule(len(ckpt.classes), **VARIANTS[name.removesuffix(PERTURBED)])
        generator = torch.Generator().manual_seed(0)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        stream = BatchStream(train_set, 8, seed=0)
        start = time.perf_counter()
        for _ in range(args.iterations):
            images, labels = stream.next()
            if perturbed:
                images = perturb(images, generator)
            with torch.no_grad():
                logits = network(images)
            loss = correlation_fit_loss(module, logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        module.eval()

        def with_module(images, module=module):
            return torch.log(module(torch.softmax(network(images), dim=1)).clamp_min(1e-8))

        with torch.no_grad():
            scores = score(with_module)
        key = f"{name} lr={lr:g}"
        results[key] = {**scores, "final_loss": loss.item()}
        show(key, scores, f"{time.perf_counter() - start:7.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
