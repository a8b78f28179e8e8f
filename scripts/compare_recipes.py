"""Train and evaluate bundles (and augmentation/loss recipes) with one budget; print a Markdown table.

    python scripts/compare_recipes.py --bundles unet unetpp cenet encdec --epochs 40 --seeds 0 \
        --dataset_dir ../shared/data/isbi2012 --output comparison.md
    python scripts/compare_recipes.py --bundles unet --recipes em:dice_ce keras:dice_ce unet:dice_ce

Each bundle x recipe ``PRESET:LOSS`` x seed is trained with MONAI's CLI into its own checkpoint
folder (``bundles/NAME/runs/compare/<run name>/``), evaluated on the test split with
the bundle's evaluate.json without and with 8-fold TTA, and tracked in MLflow like any run. The table
lists the network's parameters, wall-clock training time, the best validation V_rand (what selects
the checkpoint) and the test scores; a second table gives mean ± standard deviation over the seeds.
Extra ``--key value`` pairs after ``--`` go to training and evaluation. Precision and layout (``amp``,
``channels_last``) are measured once per bundle and pinned for all its runs, so runs differ only by recipe and seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from emseg.engine.tracking import unique_run_name

REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("dice_membrane", "v_rand", "v_info", "accuracy", "pixel_error")


def monai_run(config_files: list[Path], overrides: dict[str, str], extra: list[str]) -> float:
    """Run a bundle workflow; return its wall-clock seconds."""
    files = "[" + ",".join(f"'{f}'" for f in config_files) + "]"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    start = time.perf_counter()
    if subprocess.run(args + extra, cwd=REPO_ROOT, stdout=subprocess.DEVNULL).returncode:
        sys.exit(1)  # the workflow's own last line (stderr) said what was wrong
    return time.perf_counter() - start


def bundle_config(bundle: str, extra: list[str]):
    """The bundle's train.json with the extra ``--key value`` overrides applied (values read as the CLI reads them)."""
    from fire.parser import DefaultParseValue

    from emseg.engine.paths import load_config

    config = load_config(REPO_ROOT / "bundles" / bundle / "configs" / "train.json")
    for key, value in zip(extra[::2], extra[1::2]):
        config[key.lstrip("-")] = DefaultParseValue(value)
    return config


def parameter_count(config) -> int:
    """Parameters of the network a bundle config builds."""
    return sum(p.numel() for p in config.get_parsed_content("network_def").parameters())


def pinned_settings(config, extra: list[str]) -> dict[str, str]:
    """``amp`` and ``channels_last`` measured once for the whole comparison (unless given in ``extra``), so every
    run computes with the same arithmetic: measured per run, a timing blip changes one run's layout and with it
    its whole trajectory, a difference that is not the recipe's."""
    given = {key.lstrip("-") for key in extra[::2]}
    if {"amp", "channels_last"} <= given:
        return {}
    settings = config.get_parsed_content("settings")
    return {key: str(getattr(settings, key)) for key in ("amp", "channels_last") if key not in given}


def best_validation(bundle: str, run_name: str, metric: str = "val_v_rand") -> float:
    """Best value of ``metric`` logged by the training run ``run_name`` (the selected checkpoint's)."""
    import mlflow

    from emseg.engine.tracking import default_tracking_uri

    client = mlflow.MlflowClient(default_tracking_uri(REPO_ROOT))
    experiment = client.get_experiment_by_name(f"emseg-{bundle}")
    (run,) = client.search_runs(experiment.experiment_id, filter_string=f"attributes.run_name = '{run_name}'")
    return max(m.value for m in client.get_metric_history(run.info.run_id, metric))


def summary_rows(results: list[dict]) -> list[str]:
    """Mean and standard deviation over seeds of every column, per bundle, recipe and TTA."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["bundle"], result["recipe"], result["tta"]), []).append(result)
    rows = []
    for (bundle, recipe, tta), group in groups.items():
        def cell(key: str, digits: int = 4) -> str:
            values = [g[key] for g in group]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"
        rows.append(f"| {bundle} | {recipe} | {tta} | {len(group)} | {cell('minutes', 1)} | {cell('validation')} | "
                    + " | ".join(cell(c) for c in COLUMNS) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="+", default=["unet"])
    parser.add_argument("--recipes", nargs="+", default=["unet:dice_ce"])
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--output", default=None, help="also write the tables (Markdown) to this file")
    opts, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    header = " | ".join(f"test {c}" for c in COLUMNS)
    lines = [f"| bundle | parameters | augmentation | loss | seed | epochs | TTA | training time (min) | "
             f"validation V_rand | {header} |", "|---" * (9 + len(COLUMNS)) + "|"]
    print("\n".join(lines), flush=True)
    results = []
    for bundle in opts.bundles:
        configs = REPO_ROOT / "bundles" / bundle / "configs"
        config = bundle_config(bundle, extra)
        params = parameter_count(config)
        pinned = pinned_settings(config, extra)
        print(f"{bundle}: every run with {pinned or 'the given amp and channels_last'}", file=sys.stderr, flush=True)
        for recipe in opts.recipes:
            preset, loss = recipe.split(":")
            for seed in opts.seeds:
                name = f"{preset}-{loss}-e{opts.epochs}-s{seed}"
                run_name = unique_run_name(f"{bundle}-{name}")
                # one folder per run: extra overrides (e.g. patch_size) do not enter `name`, so a folder per
                # recipe would let one variant's promoted model replace another's
                common = {"ckpt_dir": str(REPO_ROOT / "bundles" / bundle / "runs" / "compare" / run_name), **pinned}
                if opts.dataset_dir:
                    common["dataset_dir"] = str(Path(opts.dataset_dir).resolve())
                train = {**common, "augmentation": preset, "loss_name": loss, "seed": str(seed),
                         "epochs": str(opts.epochs), "run_name": run_name}
                seconds = monai_run([configs / "train.json"], train, extra)
                validation = best_validation(bundle, train["run_name"])
                for tta in ("none", "all"):
                    evaluate_name = unique_run_name(f"{bundle}-{name}-evaluate")
                    monai_run([configs / "train.json", configs / "evaluate.json"],
                              {**common, "run_name": train["run_name"], "eval_name": evaluate_name,
                               "tta_transforms": "all" if tta == "all" else "[[0,False]]"}, extra)
                    summary = json.loads((REPO_ROOT / "bundles" / bundle / "eval" / evaluate_name / "summary.json")
                                         .read_text())
                    results.append({"bundle": bundle, "recipe": recipe, "tta": tta, "minutes": seconds / 60,
                                    "validation": validation, **{c: summary[c] for c in COLUMNS}})
                    row = (f"| {bundle} | {params / 1e6:.2f} M | {preset} | {loss} | {seed} | {opts.epochs} | {tta} | "
                           f"{seconds / 60:.1f} | {validation:.4f} | "
                           + " | ".join(f"{summary[c]:.4f}" for c in COLUMNS) + " |")
                    lines.append(row)
                    print(row, flush=True)
    means = ["", f"| bundle | recipe | TTA | seeds | training time (min) | validation V_rand | {header} |",
             "|---" * (6 + len(COLUMNS)) + "|", *summary_rows(results)]
    print("\n".join(means), flush=True)
    if opts.output:
        Path(opts.output).write_text("\n".join(lines + means) + "\n")


if __name__ == "__main__":
    main()
