"""Augmentations drawn per image and computed per batch, against torchvision's per-image
operations."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from longtail.data.batch_augment import GEOMETRIC, OPERATIONS, BatchAutoAugment, PaddedCropFlip, _affine

POLICIES = [v2.AutoAugmentPolicy.CIFAR10, v2.AutoAugmentPolicy.IMAGENET]


def images(n, side=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator)
    out[1] = out[1] // 3 + 60  # low contrast, for AutoContrast and Equalize
    return out


def reference(image, name, magnitude):
    """torchvision's AutoAugment operation on one image."""
    auto = v2.AutoAugment()
    return auto._apply_image_or_video_transform(image, name, magnitude, interpolation=auto.interpolation,
                                                fill=auto._fill)


def assert_close_to_reference(mine, theirs, name):
    if name in GEOMETRIC:  # a source point exactly between two pixels may round either way
        assert (mine == theirs).float().mean() > 0.99, name
    else:
        assert torch.equal(mine, theirs), name


@pytest.mark.parametrize("name", [*GEOMETRIC, *OPERATIONS])
def test_each_operation_is_torchvisions_at_each_images_own_magnitude(name):
    bins, signed = {**v2.AutoAugment._AUGMENTATION_SPACE, **v2.RandAugment._AUGMENTATION_SPACE}[name]
    values = bins(10, 32, 32)
    x = images(6)
    if values is None:
        magnitudes = torch.zeros(6)
    else:  # each image its own bin and sign
        magnitudes = values[torch.tensor([0, 2, 4, 6, 8, 9])].float()
        if signed:
            magnitudes = magnitudes * torch.tensor([1, -1, 1, -1, 1, -1])
    if name in GEOMETRIC:
        out = _affine(x, *GEOMETRIC[name](magnitudes, 32, 32))
    else:
        out = OPERATIONS[name](x, magnitudes)
    expected = torch.stack([reference(image, name, float(m)) for image, m in zip(x, magnitudes)])
    assert_close_to_reference(out, expected, name)


def test_geometric_operations_on_rectangles_match_torchvision():
    x = torch.randint(0, 256, (2, 3, 20, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for name in GEOMETRIC:
        magnitudes = torch.tensor([0.3, -0.25]) if name.startswith("Shear") else torch.tensor([7.0, -11.0])
        out = _affine(x, *GEOMETRIC[name](magnitudes, 20, 36))
        expected = torch.stack([reference(image, name, float(m)) for image, m in zip(x, magnitudes)])
        assert_close_to_reference(out, expected, name)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_gets_torchvisions_autoaugment_for_its_own_draw(policy):
    """The draws, read again from the same seed: one sub-policy per image, then for each
    of its two steps whether it applies and whether the magnitude is negated. Applying
    torchvision's operations image by image with them gives the batch's images."""
    batch = images(64, seed=3)
    auto = BatchAutoAugment(policy)
    torch.manual_seed(11)
    out = auto(batch)
    torch.manual_seed(11)
    policies = v2.AutoAugment(policy)._policies
    chosen = torch.randint(len(policies), (64,))
    applies = torch.rand(64, 2)
    negated = torch.rand(64, 2) <= 0.5
    used, expected = set(), []
    for i, image in enumerate(batch):
        for step, (name, probability, magnitude_bin) in enumerate(policies[chosen[i]]):
            if applies[i, step] > probability:
                continue
            bins, signed = v2.AutoAugment._AUGMENTATION_SPACE[name]
            values = bins(10, 32, 32)
            magnitude = 0.0 if values is None else float(values[magnitude_bin])
            image = reference(image, name, -magnitude if signed and negated[i, step] else magnitude)
            used.add(name)
        expected.append(image)
    equal = (out == torch.stack(expected)).flatten(1).float().mean(1)
    assert equal.min() > 0.98 and equal.mean() > 0.998  # the geometric operations' ties, at most
    assert len(used) >= 8  # the batch exercised most operations


def test_autoaugment_draws_its_sub_policies_uniformly_and_applies_them_at_their_probability():
    """Invert applies in no other way: over many images of one colour, the share of
    inverted ones is the policy's probability of Invert, summed over the sub-policies."""
    auto = BatchAutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    policies = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)._policies
    only_invert = [[(name, p, m) if name == "Invert" else (name, 0.0, m) for name, p, m in sub] for sub in policies]
    auto.probability = torch.tensor([[p for _, p, _ in sub] for sub in only_invert])
    expected = sum(p for sub in only_invert for name, p, _ in sub if name == "Invert") / len(policies)
    assert expected > 0
    torch.manual_seed(0)
    batch = torch.full((20000, 3, 2, 2), 10, dtype=torch.uint8)
    inverted = (auto(batch)[:, 0, 0, 0] == 245).float().mean().item()
    assert inverted == pytest.approx(expected, abs=0.01)


def test_padded_crop_flip_takes_a_window_of_the_padded_image_per_image():
    torch.manual_seed(0)
    x = images(400, side=8)
    out = PaddedCropFlip(2)(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets, flips = set(), []
    for image, crop in zip(padded, out):
        found = [(top, left, flip) for top in range(5) for left in range(5) for flip in (False, True)
                 if torch.equal(crop, (lambda w: w.flip(-1) if flip else w)(image[:, top:top + 8, left:left + 8]))]
        assert found, "not a window of the padded image"
        offsets.add(found[0][:2])
        flips.append(found[0][2])
    assert len(offsets) == 25  # every offset of the 5 x 5 drawn
    assert np.mean(flips) == pytest.approx(0.5, abs=0.08)
