"""``python -m skinlesion.prepare [data=multisource] [data.root=...]``: scan, hash, group and split a
data root or several sources; write the manifest and the report (see :mod:`skinlesion.data.manifest`)."""

from __future__ import annotations

import hydra.utils
from omegaconf import DictConfig

from skinlesion.core.task import command
from skinlesion.data.splits import SPLITS


def prepare(cfg: DictConfig) -> dict:
    """Prepare the configured data source again (``force=true`` by default) and print its counts."""
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    report = dm.prepare_data(force=cfg.get("force", True))
    out = dm.manifest_path.parent
    counts = report["counts"]
    print(f"prepared {report['n_images']} images from {report['root']} -> {out}")
    for split in (*SPLITS, "excluded"):
        if counts[split]:
            print(f"  {split:9s} " + "  ".join(f"{c}={n}" for c, n in counts[split].items()))
    for source, by_split in report.get("counts_by_source", {}).items():
        sizes = "  ".join(f"{split}={sum(by_split[split].values())}" for split in (*SPLITS, "excluded"))
        print(f"  source {source}: {sizes}")
    for source, others in report.get("twins_across_sources", {}).items():
        for other, n in others.items():
            print(f"  {n} files of {source} have a duplicate (or crop) in {other}")
    print(
        f"  {len(report['duplicate_groups'])} duplicate groups ({report['n_exact_pairs']} exact, "
        f"{report['n_near_pairs']} near pairs), {len(report['conflicts'])} label conflicts, "
        f"{len(report['excluded'])} files left out; see {out / 'report.md'}"
    )
    return report


main = command(prepare, "prepare")

if __name__ == "__main__":
    main()
