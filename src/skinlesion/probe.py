"""``python -m skinlesion.probe`` (``make probe``): linear probes of the packaged backbones.

A logistic regression on frozen, pooled ImageNet features says how much each backbone brings
before any fine-tuning, and how far its features carry to independent images (the external
folder). It reproduces the field's cheap baseline on the leakage-free split: grouped, stratified
folds over train + val (``prepare.assign_folds``), test scored once by a probe fitted on train.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from skinlesion.core.artifacts import write_json
from skinlesion.core.errors import ConfigError
from skinlesion.core.task import command
from skinlesion.data.datamodule import ImageListDataset, SkinLesionDataModule, folder_items
from skinlesion.data.splits import assign_folds
from skinlesion.data.transforms import eval_transforms
from skinlesion.models.backbones import get_backbone
from skinlesion.reports.metrics import accuracy_f1

log = logging.getLogger(__name__)


@torch.inference_mode()
def frozen_features(
    name: str, datasets: dict[str, ImageListDataset], size: int, batch_size: int
) -> dict[str, np.ndarray]:
    """Pooled features of ``name``'s ImageNet backbone for each dataset, the mean over the image
    and its mirror."""
    spec = get_backbone(name)
    if not spec.pretrained_available:
        raise ConfigError(f"{name} has no pretrained weights to probe")
    backbone = spec.build(pretrained=True).eval()
    tf = eval_transforms(size, spec.mean, spec.std)
    features = {}
    for split, dataset in datasets.items():
        loader = DataLoader(dataset.with_transform(tf), batch_size=batch_size)
        features[split] = torch.cat([(backbone(x) + backbone(x.flip(3))) / 2 for x, _ in loader]).numpy()
    return features


def probe_model(inverse_regularization: float):
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=inverse_regularization, max_iter=5000, class_weight="balanced"),
    )


def probe_one(x: dict[str, np.ndarray], y: dict[str, np.ndarray], folds: np.ndarray, cfg: DictConfig) -> dict:
    """Grouped CV over train + val, then train -> test and train -> external."""
    pool_x, pool_y = np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])
    every = sorted(set(pool_y.tolist()))
    per_fold = []
    for k in range(cfg.n_folds):
        held = folds == k
        fit = probe_model(cfg.inverse_regularization).fit(pool_x[~held], pool_y[~held])
        per_fold.append(accuracy_f1(pool_y[held], fit.predict(pool_x[held]), every))
    result = {
        f"cv/{m}": {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "folds": v}
        for m in ("acc", "f1_macro")
        for v in [[f[m] for f in per_fold]]
    }
    fit = probe_model(cfg.inverse_regularization).fit(x["train"], y["train"])
    for split in ("test", "external"):
        if split in x:
            present = sorted(set(y[split].tolist()))
            result |= {
                f"{split}/{k}": v for k, v in accuracy_f1(y[split], fit.predict(x[split]), present).items()
            }
    return result


def markdown(results: dict[str, dict]) -> str:
    head = "| features | dim | extract s | CV acc | CV macro-F1 | test acc | test macro-F1 | external acc |"
    lines = [head, "|" + "---|" * 8]
    for name, r in results.items():
        cv = [f"{r[f'cv/{m}']['mean']:.3f} ± {r[f'cv/{m}']['sd']:.3f}" for m in ("acc", "f1_macro")]
        ext = f"{r['external/acc']:.3f}" if "external/acc" in r else "—"
        lines.append(
            f"| {name} | {r['dim']} | {r['extract_seconds']:.0f} | {cv[0]} | {cv[1]} | "
            f"{r['test/acc']:.3f} | {r['test/f1_macro']:.3f} | {ext} |"
        )
    return "\n".join(lines) + "\n"


def probe(cfg: DictConfig) -> dict:
    unknown = {n for combo in cfg.combinations for n in combo} - set(cfg.backbones)
    if unknown:
        raise ConfigError(f"combinations name backbones not in `backbones`: {sorted(unknown)}")
    dm: SkinLesionDataModule = instantiate(cfg.data, fold=None)
    dm.prepare_data()
    dm.setup("fit")
    out = Path(cfg.output_dir)
    datasets = {s: dm.datasets[s] for s in ("train", "val", "test")}
    if cfg.external and Path(cfg.external).is_dir():
        items, ignored = folder_items(Path(cfg.external), dm.class_names)
        datasets["external"] = ImageListDataset(Path(cfg.external), items, None)
        excluded = ignored + datasets["external"].drop_unreadable()
        if excluded:
            write_json(out / "excluded.json", excluded)
            log.warning("%d external files left out (listed in %s)", len(excluded), out / "excluded.json")
    for d in datasets.values():  # decode once, before the clock: "extract s" is the network alone
        for i in range(len(d)):
            d.raw(i)
    pool = dm.split_rows("train") + dm.split_rows("val")
    fold_of = assign_folds(pool, cfg.n_folds, dm.params.split.seed)
    folds = np.array([-1 if fold_of[r["group"]] is None else fold_of[r["group"]] for r in pool])
    y = {s: np.array([label for _, label in d.items]) for s, d in datasets.items()}
    features, seconds = {}, {}
    for name in cfg.backbones:
        start = time.perf_counter()
        features[name] = frozen_features(name, datasets, cfg.image_size, cfg.batch_size)
        seconds[name] = time.perf_counter() - start
        log.info("%s features in %.0f s", name, seconds[name])
    results = {}
    for names in [[n] for n in cfg.backbones] + [list(c) for c in cfg.combinations]:
        x = {s: np.concatenate([features[n][s] for n in names], axis=1) for s in datasets}
        extract = sum(seconds[n] for n in names)
        results["+".join(names)] = probe_one(x, y, folds, cfg) | {
            "dim": x["train"].shape[1],
            "extract_seconds": extract,
        }
    write_json(out / "probe.json", results)
    text = markdown(results)
    (out / "probe.md").write_text(
        f"# Linear probes of frozen backbones\n\n{cfg.n_folds}-fold grouped CV over train + val; "
        f"test and external (`{cfg.external}`) scored by a probe fitted on train. {cfg.image_size} px, "
        f"image and mirror averaged, logistic regression C = {cfg.inverse_regularization}. "
        "Regenerate: `make probe`.\n\n" + text
    )
    print(text)
    return results


main = command(probe, "probe")


if __name__ == "__main__":
    main()
