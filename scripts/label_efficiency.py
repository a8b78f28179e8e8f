"""How many labels a lab's own microscope needs: EPFL hippocampus membranes from k labelled slices.

    python scripts/label_efficiency.py --parent bundles/unet --epfl ../shared/data/epfl-hippocampus-multiclass \\
        --k 0 1 2 4 8 all --starts finetune scratch --labels dense strokes --unlabelled no yes --seeds 0 1 2 \\
        --csv label_efficiency.csv

Every configuration trains the ``unet`` bundle through MONAI's CLI on a ``folders`` data set the script writes
under ``--work`` (the EPFL training slices, linked, and painted labels of the k chosen slices: 0 = not painted,
1 = background, 2 = membranes), then scores the run's weights on the 5 EPFL test slices: membrane Dice at the
argmax (mean over slices) and V_rand / V_info of the membrane map by the challenge's procedure (the non-membrane
probability thinned and scored at the ISBI thresholds, the best threshold over the 5 slices).

- ``k`` labelled slices are drawn from EPFL's 27 training slices by the seed (``all``: every slice); every labelled
  pixel is counted, and there are no others: validation runs on the training slices themselves and the weights
  kept are the last ones (``model_selection last``, a fixed schedule), so no label chooses a checkpoint.
- ``dense``: every pixel of the k slices painted. ``strokes``: 3-pixel lines along membranes (pieces of the membrane
  mask's centre line) and short 3-pixel lines inside cells, 2.5% + 2.5% of the k slices' pixels, as a lab paints a
  few strokes in napari.
- ``finetune``: ``configs/finetune.json`` from ``--parent`` (ISBI membrane -> EPFL membranes, interior ->
  background). ``scratch``: the same schedule from a random initialisation at the default learning rate.
- ``unlabelled yes``: the mean teacher (``--unlabelled``) on EPFL's 27 training images, labels not read.
- ``k 0``: ``parent`` is the parent applied unchanged (no training); ``finetune`` without unlabelled slices trains
  on the 27 slices with nothing painted: no loss, so no weight moves, but batch norm's statistics (of the weight
  average that is kept) follow EPFL's; with unlabelled slices, the mean teacher's consistency loss is all it learns.

Rows already in ``--csv`` are skipped, so an interrupted benchmark continues where it stopped. ``--table`` prints the
mean ± standard deviation over seeds of each configuration from the CSV.

Choosing a recipe: ``--score_on validation`` scores on 3 EPFL training slices that the run did not train on (drawn
with seed 99) instead of the test slices, and ``--variant NAME -- --key value ...`` passes
bundle overrides to the training, named NAME in the table (e.g. ``--variant lr1e-3 -- --learning_rate 0.001``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from skimage import draw, morphology
from scipy import ndimage

from emseg.data import datalist
from emseg.data.painted import LABELS_FOLDER, classes_to_painted
from emseg.engine.trained import open_model
from emseg.evaluation.challenge import SCORE_NAMES, THRESHOLDS, best_threshold, challenge_scores
from emseg.io import list_slice_files, read_image
from emseg.networks import final_output

REPO = Path(__file__).resolve().parents[1]
CLASS_MAP = "{'membranes': 'membrane', 'background': 'interior'}"
COLUMNS = ("variant", "k", "labels", "start", "unlabelled", "seed", "labelled_pixels", "labelled_slices", "dice", "v_rand",
           "v_info", "train_minutes", "run")


def membrane_masks(epfl: Path, part: str) -> tuple[list[Path], list[np.ndarray]]:
    folder = epfl / part
    files = list_slice_files(folder / "slices")
    return files, [read_image(folder / "membranes" / f.name) >= 128 for f in files]


def stroke_labels(membrane: np.ndarray, rng: np.random.Generator, coverage: float = 0.05) -> np.ndarray:
    """Painted labels of simulated strokes on one slice: 3-px pieces of the membrane centre line (2 = membranes)
    and 3-px lines inside cells at least 3 px from a membrane (1 = background), ``coverage`` / 2 of the pixels each."""
    painted = np.zeros(membrane.shape, np.uint8)
    target = coverage / 2 * membrane.size
    skeleton = np.argwhere(morphology.skeletonize(membrane))
    inside = ndimage.distance_transform_edt(~membrane) > 3
    for value, mask_ok in ((2, membrane), (1, inside)):
        painted_here = np.zeros(membrane.shape, bool)
        while painted_here.sum() < target:
            if value == 2:  # a piece of the centre line: skeleton pixels within 15 px of a random one
                centre = skeleton[rng.integers(len(skeleton))]
                near = skeleton[np.abs(skeleton - centre).max(1) <= 15]
                line = np.zeros(membrane.shape, bool)
                line[near[:, 0], near[:, 1]] = True
            else:  # a straight line of 20-60 px through a cell
                r0, c0 = np.argwhere(inside)[rng.integers(np.count_nonzero(inside))]
                angle, length = rng.uniform(0, np.pi), rng.uniform(20, 60)
                r1 = int(np.clip(r0 + length * np.sin(angle), 0, membrane.shape[0] - 1))
                c1 = int(np.clip(c0 + length * np.cos(angle), 0, membrane.shape[1] - 1))
                line = np.zeros(membrane.shape, bool)
                line[draw.line(int(r0), int(c0), r1, c1)] = True
            line = ndimage.binary_dilation(line, iterations=1) & mask_ok
            painted_here |= line
        painted[painted_here] = value
    return painted


def write_dataset(root: Path, epfl: Path, chosen: list[int], labels: str, seed: int) -> int:
    """The ``folders`` data set of one configuration; returns the number of labelled pixels."""
    files, masks = membrane_masks(epfl, "train")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / LABELS_FOLDER).mkdir(exist_ok=True)
    from PIL import Image

    rng = np.random.default_rng(1000 + seed)
    labelled = 0
    for index, (file, membrane) in enumerate(zip(files, masks)):
        link = root / "images" / file.name
        if not link.exists():
            link.symlink_to(file.resolve())
        if labels == "none":
            painted = np.zeros(membrane.shape, np.uint8)  # nothing painted: the unlabelled slices only
        elif index not in chosen:
            continue
        elif labels == "dense":
            painted = classes_to_painted(membrane.astype(np.int16))  # background 1, membranes 2
        else:
            painted = stroke_labels(membrane, rng)
        labelled += int(np.count_nonzero(painted))
        Image.fromarray(painted).save(root / LABELS_FOLDER / file.name)
    return labelled


def validation_slices(slices: int, train: list[int]) -> list[int]:
    """3 EPFL training slices for choosing a recipe, none of ``train`` (drawn with seed 99)."""
    return sorted([i for i in np.random.default_rng(99).permutation(slices).tolist() if i not in train][:3])


def score(run_dir: Path | None, parent: str, epfl: Path, on: str = "test", train: list[int] = ()) -> dict:
    """Membrane Dice (mean over the slices) and the challenge's V_rand / V_info of the membrane map, on the EPFL
    test slices (or the recipe-choosing ones, ``on`` "validation")."""
    model = open_model(run_dir if run_dir is not None else parent)
    network = model.build().float()
    names = model.class_names or []
    membrane = names.index("membranes") if "membranes" in names else names.index("membrane")
    if on == "test":
        items = datalist("epfl", epfl, "test", None, {"membranes": ["membranes"]}, None, 128, [1, 1], False)
    else:
        held = validation_slices(len(list_slice_files(epfl / "train" / "slices")), list(train))
        items = datalist("epfl", epfl, "validation", {"train": [], "validation": held}, {"membranes": ["membranes"]},
                         None, 128, [1, 1], False)
    inferer = SlidingWindowInferer(roi_size=(256, 256), sw_batch_size=4, overlap=0.25, mode="gaussian")
    dice, curves = [], []
    for item in items:
        image = torch.as_tensor(np.asarray(item["image"]))[None].float()
        image = (image - image.mean()) / image.std()
        with torch.inference_mode():
            probability = torch.softmax(inferer(image, lambda x: final_output(network(x))), 1)[0, membrane].numpy()
        truth = np.asarray(item["label"])[0] == 1
        predicted = probability > 0.5
        dice.append(2 * np.count_nonzero(predicted & truth) / (predicted.sum() + truth.sum()))
        curves.append(challenge_scores(1.0 - probability, ~truth, THRESHOLDS))
    curves = np.stack(curves)
    v_rand = best_threshold(curves[:, :, SCORE_NAMES.index("v_rand")], THRESHOLDS)[0]
    v_info = best_threshold(curves[:, :, SCORE_NAMES.index("v_info")], THRESHOLDS)[0]
    return {"dice": float(np.mean(dice)), "v_rand": float(v_rand), "v_info": float(v_info)}


def train(args, name: str, data: Path, start: str, unlabelled: bool, seed: int, train_indices: list[int]) -> float:
    bundle = Path(args.bundle).resolve()
    configs = [str(bundle / "configs" / "train.json"), str(bundle / "configs" / "finetune.json")]
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs),
               "--dataset", "folders", "--dataset_dir", str(data), "--classes", "['membranes']",
               "--split", json.dumps({"train": train_indices, "validation": []}), "--validation_split", "train",
               "--download", "False", "--register_model", "False", "--seed", str(seed), "--run_name", name,
               "--amp", str(args.amp), "--channels_last", str(args.channels_last),
               "--epochs", str(args.epochs), "--epoch_length", str(args.epoch_length),
               "--ckpt_dir", str(Path(args.work) / "models" / name), *args.overrides]
    if start == "finetune":
        command += ["--init_from", str(Path(args.parent).resolve()), "--class_map", CLASS_MAP]
    else:
        command += ["--init_from", "", "--learning_rate", str(args.scratch_learning_rate)]  # (None is ignored)
    if unlabelled:
        command += ["--unlabelled", str(Path(args.epfl).resolve() / "train" / "slices"),
                    "--consistency_weight", str(args.consistency_weight)]
    began = time.monotonic()
    result = subprocess.run(command, cwd=args.work, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"training {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return (time.monotonic() - began) / 60


def configurations(args):
    for k in args.k:
        for labels in (["none"] if k == "0" else args.labels):
            for start in args.starts:
                for unlabelled in args.unlabelled:
                    if (k == "0" and start == "scratch" and unlabelled == "no") or (start == "parent" and (
                            k != "0" or unlabelled == "yes")):
                        continue  # nothing to learn from; the parent is scored as it is once
                    if labels == "strokes" and k == "all":
                        continue
                    for seed in args.seeds:
                        yield k, labels, start, unlabelled, seed


def run(args) -> None:
    csv_path = Path(args.csv)
    done = {tuple(r[c] for c in COLUMNS[:6]) for r in csv.DictReader(csv_path.open())} if csv_path.is_file() else set()
    epfl = Path(args.epfl).resolve()
    slices = len(list_slice_files(epfl / "train" / "slices"))
    for k, labels, start, unlabelled, seed in configurations(args):
        key = (args.variant, k, labels, start, unlabelled, str(seed))
        if key in done:
            continue
        count = slices if k == "all" else int(k)
        chosen = sorted(np.random.default_rng(seed).permutation(slices)[:count].tolist())
        name = f"le_{args.variant}_k{k}_{labels}_{start}_{'u' if unlabelled == 'yes' else 'n'}_s{seed}"
        data = Path(args.work) / "data" / name
        labelled = write_dataset(data, epfl, chosen, labels, seed)
        if start == "parent":
            minutes, run_dir = 0.0, None  # the parent, unchanged
        else:
            indices = list(range(slices)) if labels == "none" else chosen
            minutes = train(args, name, data, start, unlabelled == "yes", seed, indices)
            run_dir = Path(args.bundle).resolve() / "runs" / name
        scores = score(run_dir, args.parent, epfl, args.score_on, chosen)
        row = {"variant": args.variant, "k": k, "labels": labels, "start": start if run_dir else "parent", "unlabelled": unlabelled,
               "seed": seed, "labelled_pixels": labelled, "labelled_slices": len(chosen) if labels != "none" else 0,
               **{key: f"{value:.4f}" for key, value in scores.items()}, "train_minutes": f"{minutes:.2f}",
               "run": name if run_dir else str(args.parent)}
        new = not csv_path.is_file()
        with csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(" ".join(f"{c}={row[c]}" for c in COLUMNS), flush=True)


def table(csv_path: Path) -> str:
    rows = list(csv.DictReader(csv_path.open()))
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["k"], row["labels"], row["start"], row["unlabelled"]), []).append(row)
    order = {"0": 0, "1": 1, "2": 2, "4": 4, "8": 8, "all": 99}
    lines = ["| variant | k | labels | start | unlabelled EPFL | seeds | labelled pixels | membrane Dice | V_rand | "
             "V_info | training (min) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    starts = {"parent": 0, "finetune": 1, "scratch": 2}
    for key in sorted(groups, key=lambda g: (g[0], order.get(g[1], 50), g[2], starts.get(g[3], 3), g[4])):
        group = groups[key]

        def stat(column: str, digits: int = 3) -> str:
            values = np.array([float(r[column]) for r in group])
            return f"{values.mean():.{digits}f}" + (f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else "")

        pixels = np.mean([int(r["labelled_pixels"]) for r in group])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {len(group)} | {pixels:,.0f} | {stat('dice')} | "
                     f"{stat('v_rand')} | {stat('v_info')} | {stat('train_minutes', 1)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", default=str(REPO / "bundles" / "unet"), help="the ISBI model to fine-tune")
    parser.add_argument("--bundle", default=str(REPO / "bundles" / "unet"), help="the bundle that trains")
    parser.add_argument("--epfl", default=os.environ.get("EMSEG_SHARED_DATA", str(REPO.parent / "shared" / "data"))
                        + "/epfl-hippocampus-multiclass")
    parser.add_argument("--k", nargs="+", default=["0", "1", "2", "4", "8", "all"])
    parser.add_argument("--starts", nargs="+", default=["finetune", "scratch"], choices=["parent", "finetune", "scratch"])
    parser.add_argument("--labels", nargs="+", default=["dense", "strokes"], choices=["dense", "strokes"])
    parser.add_argument("--unlabelled", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="finetune.json's schedule unless changed")
    parser.add_argument("--epoch_length", type=int, default=10)
    parser.add_argument("--scratch_learning_rate", type=float, default=1e-3)
    parser.add_argument("--consistency_weight", type=float, default=1.0)
    parser.add_argument("--amp", default="True")
    parser.add_argument("--channels_last", default="True")
    parser.add_argument("--work", default="label_efficiency", help="data sets, models and MLflow store go here")
    parser.add_argument("--csv", default="label_efficiency.csv")
    parser.add_argument("--table", action="store_true", help="only print the table of --csv")
    parser.add_argument("--score_on", choices=["test", "validation"], default="test")
    parser.add_argument("--variant", default="default", help="a name for the rows of this recipe")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1:]
    if not args.table:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        args.work = str(Path(args.work).resolve())
        run(args)
    print(table(Path(args.csv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
