import socket
import urllib.error

import pytest
import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet101_Weights

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.models import MODEL_BUILDERS, build_segmenter, freeze_batchnorm, output_size
from uda_adapt.adapt.models.mobilenet import LRASPPMobileNetV3

NUM_CLASSES = 5
LIGHT_MODELS = ["small", "small_fine", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]


def test_every_model_is_listed():
    assert set(MODEL_BUILDERS) == {
        "small", "small_fine", "deeplabv2_resnet101", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
    }


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_logits_come_at_the_output_stride_as_a_plain_tensor(name):
    torch.manual_seed(0)
    model = build_segmenter(name, NUM_CLASSES).eval()
    for size in [(33, 65), (16, 24), (17, 31)]:
        with torch.no_grad():
            logits = model(torch.randn(1, 3, *size))
        assert isinstance(logits, torch.Tensor)
        assert logits.shape == (1, NUM_CLASSES, *output_size(name, size))


def test_output_size_is_ceil_of_input_over_stride():
    assert output_size("small", (65, 129)) == (9, 17)
    assert output_size("small_fine", (65, 129)) == (17, 33)
    assert output_size("deeplabv2_resnet101", (512, 1024)) == (64, 128)
    assert output_size("lraspp_mobilenet_v3_large", (65, 129)) == (9, 17)
    assert output_size("deeplabv3_mobilenet_v3_large", (65, 129)) == (5, 9)


def test_deeplabv2_resnet101_is_stride_8_with_a_four_rate_aspp():
    model = build_segmenter("deeplabv2_resnet101", NUM_CLASSES).eval()
    assert [b.dilation for b in model.classifier.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert model.classifier.branches[0].in_channels == 2048
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 33, 33))
    assert logits.shape == (1, NUM_CLASSES, *output_size("deeplabv2_resnet101", (33, 33))) == (1, NUM_CLASSES, 5, 5)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UserError, match="deeplabv2_resnet101"):
        build_segmenter("deeplab", NUM_CLASSES)
    with pytest.raises(UserError, match="lraspp_mobilenet_v3_large"):
        output_size("deeplab", (64, 64))


def test_full_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    trained = build_segmenter("lraspp_mobilenet_v3_large", NUM_CLASSES).eval()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": trained.state_dict()}, path)  # wrapped, as in a checkpoint
    loaded = build_segmenter("lraspp_mobilenet_v3_large", NUM_CLASSES, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x))


def test_torchvision_backbone_checkpoint_loads_into_the_backbone_only(tmp_path):
    torch.manual_seed(0)
    reference = LRASPPMobileNetV3(NUM_CLASSES)
    # A torchvision classification checkpoint: "features.*" plus its own classifier.
    backbone_file = {"features." + k.removeprefix("backbone."): v for k, v in reference.state_dict().items() if k.startswith("backbone.")}
    backbone_file["classifier.0.weight"] = torch.zeros(1280, 960)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(backbone_file, path)
    model = build_segmenter("lraspp_mobilenet_v3_large", NUM_CLASSES, pretrained=str(path))
    for key, value in reference.state_dict().items():
        if key.startswith("backbone."):
            torch.testing.assert_close(model.state_dict()[key], value)


def test_foreign_weights_name_the_mismatched_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match=r"missing keys .*1 unexpected keys \(e.g. encoder.weight\)"):
        build_segmenter("small", NUM_CLASSES, pretrained=str(path))


def test_weights_for_another_class_count_say_so(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_segmenter("small", NUM_CLASSES + 1).state_dict(), path)
    with pytest.raises(UserError, match="another number of classes"):
        build_segmenter("small", NUM_CLASSES, pretrained=str(path))


def test_missing_pretrained_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="do not exist"):
        build_segmenter("lraspp_mobilenet_v3_large", NUM_CLASSES, pretrained=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize(
    "name, weights",
    [("lraspp_mobilenet_v3_large", MobileNet_V3_Large_Weights), ("deeplabv2_resnet101", ResNet101_Weights)],
)
def test_imagenet_without_network_is_a_quick_user_error(monkeypatch, name, weights):
    timeouts = []

    def offline(self, *args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(weights, "get_state_dict", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(UserError, match=f"could not download ImageNet weights for {name}.*model.pretrained=PATH"):
        build_segmenter(name, NUM_CLASSES, pretrained="imagenet")
    assert timeouts and timeouts[0] is not None and timeouts[0] <= 30  # a stalled download cannot hang
    assert socket.getdefaulttimeout() == before


def test_imagenet_weights_load_into_the_backbone(monkeypatch):
    torch.manual_seed(1)
    source = LRASPPMobileNetV3(NUM_CLASSES)
    imagenet = {"features." + k.removeprefix("backbone."): v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    monkeypatch.setattr(MobileNet_V3_Large_Weights, "get_state_dict", lambda self, *a, **k: imagenet)
    model = build_segmenter("lraspp_mobilenet_v3_large", NUM_CLASSES, pretrained="imagenet")
    torch.testing.assert_close(model.state_dict()["backbone.0.0.weight"], source.state_dict()["backbone.0.0.weight"])


def test_small_fine_is_small_plus_a_stride_4_decoder():
    """The fine variant keeps `small`'s encoder and context head (same keys, same shapes), so the
    stride-4 decoder is the only difference between the two in any comparison."""
    small, fine = build_segmenter("small", NUM_CLASSES).state_dict(), build_segmenter("small_fine", NUM_CLASSES).state_dict()
    shared = {k for k in small if not k.startswith("classifier")}
    assert shared <= set(fine) and all(small[k].shape == fine[k].shape for k in shared)
    assert {k.split(".")[0] for k in set(fine) - shared} == {"reduce_context", "reduce_low", "decode", "classifier"}


def test_small_has_no_imagenet_weights():
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_segmenter("small", NUM_CLASSES, pretrained="imagenet")


def test_freeze_batchnorm_keeps_statistics_and_stops_gradients():
    torch.manual_seed(0)
    model = build_segmenter("small", NUM_CLASSES)
    model.train()
    assert freeze_batchnorm(model) > 0
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert bn.weight.grad is None and not bn.weight.requires_grad
    assert model.classifier.weight.grad is not None
