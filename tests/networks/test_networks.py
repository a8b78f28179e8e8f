"""The architectures of emseg.networks: shapes, parameter counts against the reference
implementations, a few training steps, deep supervision and pretrained encoder weights."""

from __future__ import annotations

import pytest
import torch
from conftest import training_losses
from monai.networks.nets import BasicUNetPlusPlus

from emseg.losses import build_loss
from emseg.networks import (
    CENet,
    EncoderDecoder,
    TernausNet11,
    TernausNet16,
    UNetPlusPlus,
)
from emseg.networks.cenet import resnet34_encoder

SMALL_UNETPP = (8, 8, 16, 32, 64, 8)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def builders():
    return {
        "unetpp": lambda: UNetPlusPlus(features=SMALL_UNETPP, norm="batch"),
        "cenet": lambda: CENet(in_channels=1, out_channels=2),
        "encdec": lambda: EncoderDecoder(features=(8, 16, 32, 64)),
        "ternausnet11": lambda: TernausNet11(num_filters=8),
        "ternausnet16": lambda: TernausNet16(num_filters=8),
    }


ALL = ["unetpp", "cenet", "encdec", "ternausnet11", "ternausnet16"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [(512, 512), (256, 384)])
def test_output_shape(name, size):
    network = builders()[name]().eval()
    with torch.no_grad():
        out = network(torch.rand(1, 1, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 2, *size)


@pytest.mark.parametrize("network", [CENet(), EncoderDecoder(), TernausNet11(num_filters=8)],
                         ids=["cenet", "encdec", "ternausnet11"])
def test_size_not_divisible_is_refused(network):
    with pytest.raises(ValueError, match="divisible by"):
        network.eval()(torch.rand(1, 1, 100, 96))


def test_cenet_parameters_match_reference():
    # Reference: CE_Net_ of the CE-Net authors' code (github.com/Guzaili/CE-Net, networks/cenet.py)
    # with 3 input channels and 1 class. Counted layer by layer from that file: torchvision
    # resnet34 without fc 21,284,672 (torchvision documents 21,797,672 with the 513,000 of fc),
    # DAC block 7,342,080, RMP 1x1 conv 513, decoder blocks 250,899 + 62,208 + 15,744 + 4,640,
    # final deconv/conv layers 42,337: 29,003,093 in all.
    reference = 29_003_093
    assert n_params(CENet(in_channels=3, out_channels=1)) == pytest.approx(reference, rel=0.01)


def test_unetpp_parameters_match_reference():
    # Reference: NestedUNet of github.com/4uiiurz1/pytorch-nested-unet (archs.py), the PyTorch
    # UNet++ most reimplementations follow, nb_filter [32, 64, 128, 256, 512], 3 input channels,
    # 1 class, no deep supervision: 9,163,329 parameters (VGG blocks of two conv+BN, bilinear
    # upsampling). MONAI's version upsamples with transposed convolutions, hence not identical.
    reference = 9_163_329
    network = UNetPlusPlus(in_channels=3, out_channels=1, features=(32, 64, 128, 256, 512, 32),
                           norm="batch", deep_supervision=False)
    assert n_params(network) == pytest.approx(reference, rel=0.01)


@pytest.mark.parametrize(("network", "reference"), [(TernausNet11, 22_927_393), (TernausNet16, 32_202_337)])
def test_ternausnet_parameters_match_reference(network, reference):
    # Reference: UNet11 and UNet16 (is_deconv=True, the paper's transposed convolutions) of
    # github.com/ternaus/TernausNet (ternausnet/models.py), num_filters 32, 1 class, 3 input
    # channels. Counted from that file: torchvision's vgg11 features 9,220,480 + decoder
    # 13,706,913 = 22,927,393; vgg16 features 14,714,688 + decoder 17,487,649 = 32,202,337.
    assert n_params(network(in_channels=3, out_channels=1)) == pytest.approx(reference, rel=0.01)


def test_encdec_parameters_match_layer_arithmetic():
    # The TensorFlow 2 reference is a short Keras script without an output layer (it ends on a
    # fourth upsampling after three poolings), so there is no count to compare with; this checks
    # the documented architecture instead, counted by hand for widths (32, 64, 128, 256), 3 inputs,
    # 1 output, two 3x3 conv + batch norm per stage, 2x2 transposed conv + batch norm up.
    def conv(i, o, k=3):
        return i * o * k * k + 2 * o  # weights + batch-norm affine, no bias

    widths = [32, 64, 128, 256]
    expected, c = 0, 3
    for w in widths:
        expected += conv(c, w) + conv(w, w)
        c = w
    expected += conv(256, 512) + conv(512, 512)
    c = 512
    for w in reversed(widths):
        expected += conv(c, w, k=2) + conv(w, w) + conv(w, w)
        c = w
    expected += 32 * 1 + 1
    assert n_params(EncoderDecoder(in_channels=3, out_channels=1)) == expected


@pytest.mark.parametrize("name", ALL)
def test_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    network = builders()[name]().train()
    image = torch.rand(2, 1, 64, 64)
    label = (image > 0.5).float()  # a learnable target: bright pixels are class 1
    ds = [1.0] * 4 if name == "unetpp" else None
    losses = training_losses(network, build_loss("dice_ce", deep_supervision_weights=ds), image, label, steps=8, lr=1e-3)
    assert losses[-1] < losses[0]


def test_unetpp_deep_supervision_heads():
    network = UNetPlusPlus(features=SMALL_UNETPP)
    x = torch.rand(2, 1, 64, 48)
    outputs = network.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 4
    assert all(o.shape == (2, 2, 64, 48) for o in outputs)
    single = network.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 2, 64, 48)
    no_ds = UNetPlusPlus(features=SMALL_UNETPP, deep_supervision=False).train()(x)
    assert isinstance(no_ds, torch.Tensor) and no_ds.shape == (2, 2, 64, 48)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unetpp_pruned_head_equals_monai_head(depth):
    """A pruned network computes exactly MONAI's head X(0, depth) of the full network."""
    torch.manual_seed(0)
    full = BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=SMALL_UNETPP,
                             deep_supervision=True).eval()
    pruned = UNetPlusPlus(features=SMALL_UNETPP, inference_depth=depth).eval()
    pruned.load_state_dict(full.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), full(x)[depth - 1])


def test_unetpp_rejects_bad_depth():
    with pytest.raises(ValueError, match="inference_depth"):
        UNetPlusPlus(inference_depth=5)


def _imagenet_like_resnet34(path):
    """A state dict laid out like torchvision's resnet34 (RGB input and a 1000-class fc), saved to ``path``."""
    state = resnet34_encoder(in_channels=3).state_dict()
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    torch.save(state, path)
    return state


def test_cenet_loads_torchvision_resnet34_weights(tmp_path):
    path = tmp_path / "resnet34-imagenet.pth"
    state = _imagenet_like_resnet34(path)
    network = CENet(in_channels=1, pretrained_encoder=str(path))
    loaded = network.encoder.state_dict()
    torch.testing.assert_close(loaded["layer3.2.conv1.weight"], state["layer3.2.conv1.weight"])
    # grey input = R = G = B, so the folded first filter is the sum over colour
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))


def test_pretrained_file_that_does_not_fit_is_named(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="vgg.pth.*missing"):
        CENet(pretrained_encoder=str(path))


class Payload:
    """A class that is not a tensor: loading it would need to run code."""


def test_pretrained_file_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pth.*refused"):
        CENet(pretrained_encoder=str(path))


def torchvision_vgg_state_dict(layout: list, batch_norm: bool = False) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's VGG layout (features.N conv/ReLU/pool, or conv/BN/ReLU/pool as in vgg11_bn,
    classifier.0/3/6), built here from torchvision's configuration list without torchvision or a download; batch
    norm statistics are random, as trained ones would be."""
    layers, channels = [], 3
    for item in layout:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            norm = [torch.nn.BatchNorm2d(item)] if batch_norm else []
            layers += [torch.nn.Conv2d(channels, item, 3, padding=1), *norm, torch.nn.ReLU(inplace=True)]
            channels = item
            for module in norm:
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    vgg = torch.nn.Module()
    vgg.features = torch.nn.Sequential(*layers)
    vgg.classifier = torch.nn.Sequential(torch.nn.Linear(512 * 7 * 7, 16), torch.nn.ReLU(), torch.nn.Dropout(),
                                         torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Dropout(),
                                         torch.nn.Linear(16, 1000))
    return vgg.state_dict()


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@pytest.mark.parametrize("batch_norm", [False, True], ids=["vgg", "vgg_bn"])
@pytest.mark.parametrize(("network", "layout"), [(TernausNet11, VGG11), (TernausNet16, VGG16)])
def test_ternausnet_loads_torchvision_vgg_weights(network, layout, batch_norm, tmp_path):
    state = torchvision_vgg_state_dict(layout, batch_norm)
    path = tmp_path / "vgg-imagenet.pth"
    torch.save(state, path)
    encoder_keys = {k for k in state if k.startswith("features.")}
    model = network(in_channels=1, out_channels=6, pretrained_encoder=str(path), batch_norm=batch_norm)
    loaded = model.encoder.state_dict()
    assert set(loaded) == encoder_keys  # no missing or unexpected keys once the classifier is dropped
    for key in encoder_keys - {"features.0.weight"}:
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0)
    torch.testing.assert_close(loaded["features.0.weight"], state["features.0.weight"].sum(1, keepdim=True))


def test_ternausnet_with_batch_norm_refuses_weights_without_it(tmp_path):
    path = tmp_path / "vgg11-imagenet.pth"
    torch.save(torchvision_vgg_state_dict(VGG11), path)
    with pytest.raises(ValueError, match="vgg11-imagenet.pth.*missing.*running_mean"):
        TernausNet11(pretrained_encoder=str(path), batch_norm=True)


def test_ternausnet_batch_norm_follows_every_convolution():
    plain, normed = TernausNet16(num_filters=8), TernausNet16(num_filters=8, batch_norm=True)
    convolutions = [m for m in normed.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(convolutions) - 1  # all but the final 1x1 convolution to the logits
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert normed(torch.randn(2, 1, 64, 64)).shape == plain(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)
