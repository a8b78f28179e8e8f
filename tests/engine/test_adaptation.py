"""Adapting a shared model to a lab's microscope: sparse (painted) labels, starting from a trained model
(``init_from``, every kind of source, through the real bundle CLI), and the mean teacher on unlabelled slices."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import config, mlflow_runs, monai_bundle, tiny_training, tiny_unet_copy
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from monai.transforms import AsDiscreted
from PIL import Image

from emseg.data.painted import UNLABELLED, painted_to_classes
from emseg.engine.semi import MeanTeacher, iteration_update
from emseg.engine.trained import ModelSourceError, TrainedModel, initialise_network, open_model
from emseg.evaluation.scores import class_scores
from emseg.io import VolumeError
from emseg.losses import build_loss
from emseg.transforms import ScoredOneHotd

FEATURES = [8, 8, 16, 32, 64, 8]


# --- sparse labels ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ce", "dice", "dice_ce"])
def test_unlabelled_pixels_give_exactly_zero_gradient_and_the_labelled_ones_the_dense_loss(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    classes = torch.randint(0, 3, (2, 1, 16, 16)).float()
    sparse = classes.clone()
    sparse[..., :6] = UNLABELLED  # the left 6 columns not painted
    loss = build_loss(name)(logits, sparse)
    loss.backward()
    assert logits.grad[..., :6].abs().max().item() == 0.0
    assert logits.grad[..., 6:].abs().max().item() > 0
    # the same as the dense loss of the labelled columns alone
    crop = logits.detach()[..., 6:].clone().requires_grad_(True)
    assert loss.item() == pytest.approx(build_loss(name)(crop, classes[..., 6:]).item(), rel=1e-5)


def test_dense_labels_give_monai_dice_ce_unchanged():
    torch.manual_seed(1)
    logits, classes = torch.randn(2, 2, 16, 16), torch.randint(0, 2, (2, 1, 16, 16)).float()
    expected = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, classes)
    assert build_loss("dice_ce")(logits, classes).item() == expected.item()


def test_a_batch_with_nothing_labelled_has_zero_loss_and_gradient():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    loss = build_loss("dice_ce")(logits, torch.full((1, 1, 8, 8), float(UNLABELLED)))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("name", ["border_ce", "dice_ce_cldice", "bce_jaccard"])
def test_losses_that_need_every_pixel_refuse_sparse_labels(name):
    target = torch.zeros(1, 2, 8, 8)
    target[:, 0, 0, 0] = UNLABELLED
    with pytest.raises(ValueError, match="needs every pixel labelled"):
        build_loss(name)(torch.randn(1, 2, 8, 8), target)


def test_painted_values_become_classes_and_wrong_values_are_refused(tmp_path):
    painted = np.array([[0, 1, 2], [2, 0, 1]], np.uint8)
    assert painted_to_classes(painted, 2, "x.png").tolist() == [[-1, 0, 1], [1, -1, 0]]
    with pytest.raises(VolumeError, match=r"strokes.png: painted value 3 but there are 2 classes"):
        painted_to_classes(np.array([[3]]), 2, tmp_path / "strokes.png")


def test_scores_leave_unlabelled_pixels_out():
    rng = np.random.default_rng(0)
    prediction, label = rng.integers(0, 3, (32, 32)), rng.integers(0, 3, (32, 32))
    sparse = label.copy()
    sparse[:, :10] = UNLABELLED
    scores = class_scores(prediction, sparse, ["background", "a", "b"])
    for c, name in enumerate(["a", "b"], start=1):
        p, t = prediction[:, 10:] == c, label[:, 10:] == c
        assert scores[f"dice_{name}"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), rel=1e-6)
    assert scores["accuracy"] == pytest.approx((prediction[:, 10:] == label[:, 10:]).mean())
    # validation's one-hot: dense labels as MONAI's AsDiscreted gives them; sparse ones in no class
    pred = torch.randn(3, 8, 8)
    dense = torch.randint(0, 3, (1, 8, 8)).float()
    ours = ScoredOneHotd(3)({"pred": pred, "label": dense})
    monai = AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=3)({"pred": pred, "label": dense})
    assert torch.equal(ours["pred"], monai["pred"].as_tensor()) and torch.equal(ours["label"], monai["label"].as_tensor())
    dense[0, 0] = UNLABELLED
    ours = ScoredOneHotd(3)({"pred": pred, "label": dense})
    assert ours["pred"][:, 0].sum() == 0 and ours["label"][:, 0].sum() == 0 and ours["label"][:, 1:].sum(0).min() == 1


# --- starting from a trained model ---------------------------------------------------------------------------------
def _unet(classes: int, features=FEATURES) -> BasicUNet:
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=classes, features=features, norm="batch")


def _parent(tmp_path: Path, classes=("membrane", "interior"), features=FEATURES) -> TrainedModel:
    torch.manual_seed(3)
    network = _unet(len(classes), features)
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    (tmp_path / "model.json").write_text(json.dumps({
        "network": {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": len(classes),
                    "features": list(features), "norm": "batch"}, "class_names": list(classes)}))
    return open_model(path)


def test_the_head_is_mapped_class_by_class_and_the_rest_copied(tmp_path):
    parent = _parent(tmp_path)
    torch.manual_seed(4)
    child = _unet(3)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    initialise_network(child, parent, ["background", "membranes", "mitochondria"],
                       {"background": "interior", "membranes": "membrane"})
    state = child.state_dict()
    for key in ("final_conv.weight", "final_conv.bias"):
        assert torch.equal(state[key][0], parent.state[key][1])  # background <- interior
        assert torch.equal(state[key][1], parent.state[key][0])  # membranes <- membrane
        assert torch.equal(state[key][2], fresh[key][2])  # mitochondria: as initialised
    body = [k for k in state if not k.startswith("final_conv")]
    assert body and all(torch.equal(state[k], parent.state[k]) for k in body)


def test_a_parent_of_another_width_or_a_wrong_class_map_is_refused(tmp_path):
    parent = _parent(tmp_path, features=[16, 16, 32, 64, 128, 16])
    with pytest.raises(ModelSourceError, match=r"model.pt: BasicUNet does not fit this bundle's BasicUNet \(tensor"):
        initialise_network(_unet(2), parent, ["membrane", "interior"])
    parent = _parent(tmp_path)
    with pytest.raises(ModelSourceError, match=r"class_map: 'nucleus' is not a class of this bundle"):
        initialise_network(_unet(2), parent, ["membrane", "interior"], {"nucleus": "membrane"})


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match=r"init_from .*nothing.pt: no such file or folder"):
        open_model(tmp_path / "nothing.pt")


# --- the mean teacher ----------------------------------------------------------------------------------------------
def test_a_semi_supervised_step_learns_from_the_unlabelled_slices(tmp_path):
    stack = tmp_path / "unlabelled.tif"
    tifffile.imwrite(stack, np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8))
    torch.manual_seed(0)
    network = _unet(2)
    teacher = _unet(2)
    teacher.load_state_dict(network.state_dict())
    mean_teacher = MeanTeacher(stack, teacher, weight=1.0, rampup_epochs=0, patch_size=(32, 32), crops_per_slice=2,
                               batch_size=2)
    assert mean_teacher.describe() == {"source": str(stack), "slices": 3, "weight": 1.0}
    before = {k: v.clone() for k, v in network.state_dict().items()}
    data = [{"image": torch.randn(1, 32, 32), "label": torch.full((1, 32, 32), float(UNLABELLED))}] * 2
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=torch.utils.data.DataLoader(
        data, batch_size=2), network=network, optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=build_loss("dice_ce"), iteration_update=iteration_update(mean_teacher))
    trainer.run()
    output = trainer.state.output[0]  # decollated per sample, as MONAI's own iteration leaves it
    assert float(output["supervised_loss"]) == 0.0  # nothing labelled: all it learnt came from the unlabelled slices
    assert float(output["consistency_loss"]) > 0
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items() if k.endswith("weight"))
    assert iteration_update(MeanTeacher(None, teacher)) is None


# --- through the bundle CLI ------------------------------------------------------------------------------------------
tiny = tiny_training


@pytest.fixture(scope="module")
def parent_project(tiny_unet, tmp_path_factory, isbi_dir):
    """The session's tiny ISBI unet (trained, promoted and registered), packed and exported to bioimage.io."""
    project = tiny_unet_copy(tiny_unet, tmp_path_factory.mktemp("parent"))
    bundle = project / "bundles" / "unet"
    subprocess.run([sys.executable, "-m", "emseg.cli", "bundle", "pack", str(bundle), "--output", str(project)],
                   check=True, capture_output=True, cwd=project)
    subprocess.run([sys.executable, "-m", "emseg.cli", "bundle", "export-bioimageio", str(bundle),
                    str(project / "unet.bioimageio.zip"), "--image", str(isbi_dir / "test-volume.tif")],
                   check=True, capture_output=True, cwd=project)
    return project


def _sources(project: Path) -> dict[str, str]:
    bundle = project / "bundles" / "unet"
    return {"bundle": str(bundle), "run": str(bundle / "runs" / "parent"), "weights": str(bundle / "models/model.pt"),
            "packed": str(next(project.glob("unet_v*.zip"))), "bioimageio": str(project / "unet.bioimageio.zip"),
            "registry": "models:/emseg-unet/1"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bundle", "run", "weights", "packed", "bioimageio", "registry"])
def test_training_starts_from_each_kind_of_source_and_records_its_parent(parent_project, tmp_path, isbi_dir, kind):
    source = _sources(parent_project)[kind]
    promoted = json.loads((parent_project / "bundles/unet/models/model.json").read_text())
    result = monai_bundle("run", "training", "--config_file", config(parent_project, "unet", "train.json"),
                          *tiny(dataset_dir=isbi_dir, init_from=source), "--run_name", f"child_{kind}",
                          "--ckpt_dir", str(tmp_path / "models"), cwd=parent_project)
    assert f"init_from {source}" in result.stderr + result.stdout
    record = json.loads((parent_project / f"bundles/unet/runs/child_{kind}/run.json").read_text())
    parent = record["parent"]
    assert parent["kind"] == kind and parent["source"] == source
    if kind != "bioimageio":  # bioimage.io re-saves the weights: its file has its own digest
        assert parent["sha256"] == promoted["weights_sha256"]
    assert parent.get("run_name", "parent") == "parent"
    client, runs = mlflow_runs(parent_project, "emseg-unet")
    run = next(r for r in runs if r.info.run_name == f"child_{kind}")
    assert run.data.params["parent_sha256"] == parent["sha256"] and run.data.params["init_from"] == source


@pytest.mark.slow
def test_a_parent_that_does_not_fit_is_refused_in_one_line(parent_project, isbi_dir):
    result = monai_bundle("run", "training", "--config_file", config(parent_project, "unet", "train.json"),
                          *tiny(dataset_dir=isbi_dir, init_from=_sources(parent_project)["bundle"],
                                features="[16,16,32,64,128,16]"), "--run_name", "misfit", cwd=parent_project,
                          check=False)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last.startswith("emseg: error: ") and "init_from" in last and "does not fit this bundle's BasicUNet" in last


@pytest.mark.slow
def test_a_fine_tuned_run_on_painted_strokes_is_packed_naming_its_parent(parent_project, tmp_path, isbi_dir, isbi_volumes):
    images, labels = isbi_volumes
    data = tmp_path / "strokes"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(images[i]).save(data / "images" / f"slice{i}.png")
        painted = np.zeros(labels[i].shape, np.uint8)
        rows = rng.choice(labels[i].shape[0], 40, replace=False)
        painted[rows] = np.where(labels[i][rows] > 0, 2, 3)  # 1 = background, 2 = membranes (mask), 3 = cells
        Image.fromarray(painted).save(data / "labels" / f"slice{i}.png")
    # a painted value beyond the classes: refused by name before training
    bad = monai_bundle("run", "training", "--config_file", config(parent_project, "unet", "train.json"),
                       *tiny(dataset="folders", dataset_dir=data, classes="['membranes']"), cwd=parent_project,
                       check=False)
    assert bad.returncode != 0 and "slice0.png: painted value 3 but there are 2 classes" in bad.stderr.splitlines()[-1]
    for i in range(3):
        painted = np.asarray(Image.open(data / "labels" / f"slice{i}.png"))
        Image.fromarray(np.where(painted == 3, 1, painted).astype(np.uint8)).save(data / "labels" / f"slice{i}.png")
    configs = json.dumps([config(parent_project, "unet", "train.json"), config(parent_project, "unet", "finetune.json")])
    monai_bundle("run", "training", "--config_file", configs,
                 *tiny(dataset="folders", dataset_dir=data, classes="['membranes']", epochs=2,
                       class_map="{'membranes': 'membrane', 'background': 'interior'}",
                       split="{'train': [0, 1], 'validation': [2]}"),
                 "--run_name", "strokes", "--ckpt_dir", str(tmp_path / "models"), cwd=parent_project)
    bundle = parent_project / "bundles" / "unet"
    record = json.loads((bundle / "runs/strokes/run.json").read_text())
    assert record["status"] == "FINISHED" and record["class_names"] == ["background", "membranes"]
    assert record["parent"]["kind"] == "bundle"
    rows = (bundle / "runs/strokes/metrics.csv").read_text()
    assert "val_dice_membranes" in rows  # validation scored the painted pixels of slice 2
    out = tmp_path / "packed"
    subprocess.run([sys.executable, "-m", "emseg.cli", "bundle", "pack", str(bundle), "--run-name", "strokes",
                    "--output", str(out)], check=True, capture_output=True, cwd=parent_project)
    with zipfile.ZipFile(next(out.glob("*.zip"))) as archive:
        meta = json.loads(archive.read("unet/configs/metadata.json"))
    assert meta["emseg_provenance"]["parent"]["sha256"] == record["parent"]["sha256"]


@pytest.mark.slow
def test_emseg_evaluate_scores_painted_pixels_only(tmp_path, isbi_volumes):
    _, labels = isbi_volumes
    truth = (labels[25:27] > 0).astype(np.uint8)  # 1 = interior
    rng = np.random.default_rng(0)
    probability = np.clip(truth + rng.normal(0, 0.6, truth.shape), 0, 1).astype(np.float32)  # interior probability
    painted = np.where(truth > 0, 2, 1).astype(np.uint8)
    painted[:, :, :300] = 0  # only the right part is painted
    tifffile.imwrite(tmp_path / "prob.tif", probability)
    tifffile.imwrite(tmp_path / "strokes.tif", painted)
    result = subprocess.run([sys.executable, "-m", "emseg.cli", "evaluate", str(tmp_path / "prob.tif"),
                             str(tmp_path / "strokes.tif"), "--painted", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    predicted, membrane = probability[:, :, 300:] < 0.5, truth[:, :, 300:] == 0
    expected = np.mean([2 * (p & t).sum() / (p.sum() + t.sum()) for p, t in zip(predicted, membrane)])
    assert summary["dice_membrane"] == pytest.approx(expected, rel=1e-6)
    assert "v_rand" not in summary and "not computed" in summary["challenge_scores"]


@pytest.mark.slow
def test_the_unlabelled_stack_alone_trains_through_the_cli_and_keeps_its_last_weights(parent_project, tmp_path,
                                                                                     isbi_dir, isbi_volumes):
    images, _ = isbi_volumes
    data = tmp_path / "nothing_painted"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(data / "images" / f"slice{i}.png")
        Image.fromarray(np.zeros(images[i].shape, np.uint8)).save(data / "labels" / f"slice{i}.png")
    configs = json.dumps([config(parent_project, "unet", "train.json"), config(parent_project, "unet", "finetune.json")])
    result = monai_bundle("run", "training", "--config_file", configs,
                          *tiny(dataset="folders", dataset_dir=data, classes="['membranes']", epochs=2,
                                class_map="{'membranes': 'membrane', 'background': 'interior'}",
                                split="{'train': [0, 1], 'validation': []}", validation_split="train",
                                unlabelled=str(isbi_dir / "test-volume.tif")),
                          "--run_name", "unlabelled_only", "--ckpt_dir", str(tmp_path / "models"), cwd=parent_project)
    run = parent_project / "bundles/unet/runs/unlabelled_only"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["unlabelled"]["slices"] == 30
    assert (run / "model_best.pt").is_file() and not (tmp_path / "models" / "model.pt").exists()
    assert "were not scored" in result.stderr + result.stdout  # kept, not promoted
    losses = [float(line.split(",")[1]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)  # the consistency loss: nothing else was labelled
