
import pytest
import torch

from longtail.models import CosineClassifier, build_backbone, resnet32


def test_resnet32_is_the_cifar_resnet_of_the_paper():
    model = resnet32(num_classes=10)
    parameters = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < parameters < 0.47e6  # He et al. 2016, Table 6: 0.46M
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 64, 8, 8)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 64)
    assert model(x).shape == (2, 10)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_features == 64
    assert resnet32()(torch.randn(2, 3, 8, 8)).shape == (2, 64)


def test_backbones_by_name_give_pooled_features():
    assert build_backbone("resnet50")(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    assert build_backbone("timm:resnet18").num_features == 512
    with pytest.raises(ValueError, match="resnet32"):
        build_backbone("resnet33")


def test_cosine_classifier_is_scaled_cosine_similarity():
    head = CosineClassifier(4, 3, scale=10.0)
    x = torch.randn(5, 4)
    expected = torch.tensor([[10.0 * float(torch.dot(a, w) / (a.norm() * w.norm())) for w in head.weight] for a in x])
    assert torch.allclose(head(x), expected, atol=1e-5)
    assert torch.allclose(head(3.0 * x), head(x), atol=1e-5)
