"""Train and evaluate a bundle with several augmentation presets and losses; print a Markdown table.

    python scripts/compare_recipes.py --bundle unet --recipes em:dice_ce keras:dice_ce unet:dice_ce \
        --epochs 32 --seeds 0 --dataset_dir ../shared/data/isbi2012

Each recipe ``PRESET:LOSS`` is trained with MONAI's CLI into its own checkpoint folder
(``bundles/NAME/runs/compare/PRESET-LOSS-sSEED/``), evaluated on the test split with the
bundle's evaluate.json, and tracked in MLflow like any run. The table lists wall-clock
training time, the best validation V_rand (what selects the recipe) and the test scores;
extra ``--key value`` pairs after ``--`` go to training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from emseg.tracking import unique_run_name

REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("v_rand", "v_info", "dice_membrane", "accuracy", "pixel_error")


def monai_run(config_files: list[Path], overrides: dict[str, str], extra: list[str]) -> float:
    """Run a bundle workflow from the repository root; return its wall-clock seconds."""
    files = "[" + ",".join(f"'{f}'" for f in config_files) + "]"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    start = time.perf_counter()
    subprocess.run(args + extra, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def best_validation(bundle: str, run_name: str, metric: str = "val_v_rand") -> float:
    """Best value of ``metric`` logged by the training run ``run_name`` (the selected checkpoint's)."""
    import mlflow

    from emseg.tracking import default_tracking_uri

    client = mlflow.MlflowClient(default_tracking_uri(REPO_ROOT))
    experiment = client.get_experiment_by_name(f"emseg-{bundle}")
    (run,) = client.search_runs(experiment.experiment_id, filter_string=f"attributes.run_name = '{run_name}'")
    return max(m.value for m in client.get_metric_history(run.info.run_id, metric))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="unet")
    parser.add_argument("--recipes", nargs="+", default=["em:dice_ce", "keras:dice_ce", "unet:dice_ce"])
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--output", default=None, help="also write the table (Markdown) to this file")
    opts, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    configs = REPO_ROOT / "bundles" / opts.bundle / "configs"
    lines = ["| augmentation | loss | seed | epochs | training time (min) | validation V_rand | "
             + " | ".join(f"test {c}" for c in COLUMNS) + " |", "|---" * (6 + len(COLUMNS)) + "|"]
    print("\n".join(lines), flush=True)
    for recipe in opts.recipes:
        preset, loss = recipe.split(":")
        for seed in opts.seeds:
            name = f"{preset}-{loss}-s{seed}"
            common = {"ckpt_dir": str(REPO_ROOT / "bundles" / opts.bundle / "runs" / "compare" / name)}
            if opts.dataset_dir:
                common["dataset_dir"] = str(Path(opts.dataset_dir).resolve())
            train = {**common, "augmentation": preset, "loss_name": loss, "seed": str(seed),
                     "epochs": str(opts.epochs), "run_name": unique_run_name(f"{opts.bundle}-{name}")}
            seconds = monai_run([configs / "train.json"], train, extra)
            evaluate_name = unique_run_name(f"{opts.bundle}-{name}-evaluate")
            monai_run([configs / "train.json", configs / "evaluate.json"], {**common, "run_name": evaluate_name}, [])
            summary = json.loads((REPO_ROOT / "bundles" / opts.bundle / "eval" / evaluate_name / "summary.json")
                                 .read_text())
            validation = best_validation(opts.bundle, train["run_name"])
            row = (f"| {preset} | {loss} | {seed} | {opts.epochs} | {seconds / 60:.1f} | {validation:.4f} | "
                   + " | ".join(f"{summary[c]:.4f}" for c in COLUMNS) + " |")
            lines.append(row)
            print(row, flush=True)
    if opts.output:
        Path(opts.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
