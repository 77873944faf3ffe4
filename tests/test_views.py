"""Views: the per-image and per-batch stages, their seeding, and the 224-pixel policies."""

import numpy as np
import pytest
import torch

from longtail.data import DataSplits, LabeledImages, LongTailDataModule
from longtail.data.module import TransformedImages
from longtail.data.images import ImageFiles
from longtail.data.transforms import MultiView, view_transform

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def constant_images(n, side, value=(200, 100, 50)):
    return np.broadcast_to(np.asarray(value, dtype=np.uint8), (n, side, side, 3)).copy()


def dataset(images, views, size=None):
    data = LabeledImages(images, np.arange(len(images)) % 2, ["a", "b"])
    side = images.shape[1] if isinstance(images, np.ndarray) else None
    transform = MultiView([view_transform(v, size or side, MEAN, STD, side) for v in views])
    return TransformedImages(data, transform)


def both_stages(data, keys):
    """``(views, labels)`` of ``keys``: the loader's stage, then the batch stage."""
    batch = data.__getitems__(keys)
    return data.transform.batch(batch.images, batch.seed), batch.labels


def test_none_is_the_images_normalised():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    views, labels = both_stages(dataset(images, ["none"]), [0, 1, 2, 3])
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
                - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert views.shape == (4, 1, 3, 8, 8)
    torch.testing.assert_close(views[:, 0].double(), expected, rtol=0, atol=1e-6)
    assert labels.tolist() == [0, 1, 0, 1]


def test_cutout_erases_a_square_of_half_the_side_to_the_mean_clipped_at_the_border():
    keys = [(i % 3, seed) for i, seed in enumerate(range(60))]
    views, _ = both_stages(dataset(constant_images(3, 16), ["none+cutout"]), keys)
    sides = []
    for image in views[:, 0]:
        erased = (image == 0).all(dim=0)  # the constant colour normalises to no zero
        rows, cols = erased.nonzero().unbind(1)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() == height * width  # one rectangle
        assert height <= 8 and width <= 8
        sides += [int(height), int(width)]
    assert 8 in sides and min(sides) < 8  # whole squares, and squares cut by the border


def test_cutout_erases_the_expected_share_of_the_image():
    """DeVries and Taylor: the centre uniform over the image, the square clipped. The
    expected share, by counting every centre: on 32 pixels with a 16-pixel square, 19%."""
    from longtail.data.transforms import Cutout

    def expected(side, square):
        lengths = [min(c + square // 2, side) - max(c - square // 2, 0) for c in range(side)]
        return (sum(lengths) / side / side) ** 2

    assert expected(32, 16) == pytest.approx(0.1914, abs=1e-4)
    torch.manual_seed(0)
    for side in (16, 32):
        erased = Cutout(side // 2)(torch.ones(4000, 1, side, side)) == 0
        assert erased.float().mean().item() == pytest.approx(expected(side, side // 2), abs=0.005)


def test_large_rand_is_timms_randaugment_and_is_seeded_per_image(tmp_path):
    from longtail.data.transforms import BCL_RANDAUGMENT, TimmRandAugment, image_steps

    assert BCL_RANDAUGMENT == "rand-n2-m10-mstd0.5"
    steps = image_steps("rand", 64, None, MEAN)
    (randaugment,) = [step for step in steps if isinstance(step, TimmRandAugment)]
    assert randaugment.transform.num_layers == 2
    assert all(op.prob == 0.5 and op.magnitude == 10 and op.magnitude_std == 0.5 for op in randaugment.transform.ops)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 72, 72, 3), dtype=np.uint8)
    data = dataset(images, ["rand"], size=64)
    first = data.__getitems__([(i, 100 + i) for i in range(4)]).images
    again = data.__getitems__([(i, 100 + i) for i in range(4)]).images
    other = data.__getitems__([(i, 200 + i) for i in range(4)]).images
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_batch_stage_draws_for_each_sample():
    """Colour jitter and grayscale run once per batch but with each sample's own draw:
    copies of one image come out different."""
    keys = [(0, seed) for seed in range(16)]
    views, _ = both_stages(dataset(constant_images(1, 16), ["sim"]), keys)
    colours = views[:, 0].mean(dim=(2, 3))
    assert len({tuple(c) for c in colours.round(decimals=4).tolist()}) > 8


def test_sims_crop_runs_in_the_batch_stage_with_each_samples_own_draw():
    """Images stored at the input side: the loader hands SimAugment's view over as stored
    (uint8), and the batch stage crops and flips each copy differently. A white column
    at x = 2 on black lands at many places, on both halves (flips)."""
    image = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    image[0, :, 2] = 255
    data = dataset(image, ["sim"])
    keys = [(0, seed) for seed in range(24)]
    batch = data.__getitems__(keys)
    assert batch.images.dtype == torch.uint8
    assert torch.equal(batch.images[:, 0], torch.from_numpy(image).permute(0, 3, 1, 2).expand(24, -1, -1, -1))
    views = data.transform.batch(batch.images, batch.seed)[:, 0]
    columns = views.mean(dim=(1, 2)).argmax(dim=1)  # where the brightest column went
    assert len(set(columns.tolist())) > 4
    assert (columns < 8).any() and (columns >= 8).any()


def test_swavs_small_crops_cover_a_smaller_part_of_the_image_than_its_global_views():
    """Noise cropped and resized back to the side: the smaller the part a crop covers, the
    more it is enlarged and the less neighbouring pixels differ (SwAV's local crops cover
    0.05 to 0.14 of the image, its global views 0.14 to 1)."""
    noise = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    data = dataset(noise, ["sim_global", "sim_local"])
    views, _ = both_stages(data, [(0, seed) for seed in range(64)])
    neighbour_difference = (views[..., 1:] - views[..., :-1]).abs().mean(dim=(0, 2, 3, 4))
    assert neighbour_difference[1] < 0.7 * neighbour_difference[0]


def test_a_batch_is_a_function_of_its_keys():
    rng = np.random.default_rng(1)
    data = dataset(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), ["auto+cutout", "sim", "sim"])
    keys = [(i, 1000 + i) for i in range(6)]
    torch.manual_seed(0)
    first, _ = both_stages(data, keys)
    state = torch.get_rng_state()
    second, _ = both_stages(data, keys)
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)  # the process's own draws are left alone
    other, _ = both_stages(data, [(i, 2000 + i) for i in range(6)])
    assert not torch.equal(first, other)


@pytest.mark.parametrize("view", ["none", "standard", "auto", "rand+cutout", "sim"])
def test_large_policies_bring_images_of_any_size_to_the_input_side(tmp_path, view):
    from PIL import Image

    rng = np.random.default_rng(2)
    files = []
    for i, (height, width) in enumerate([(90, 120), (130, 70), (100, 100)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(files[-1])
    views, _ = both_stages(dataset(ImageFiles(files), [view], size=64), [(0, 1), (1, 2), (2, 3)])
    assert views.shape == (3, 1, 3, 64, 64) and views.dtype == torch.float32


def test_large_evaluation_is_the_centre_crop_of_the_resized_image():
    """none at side 64: the shorter side resized to 73 (8/7 of 64), the centre 64 kept.
    Stripes across the width: the crop keeps the middle stripe's columns."""
    image = np.zeros((73, 219, 3), dtype=np.uint8)
    image[:, 73:146] = 255  # the middle third white
    view = view_transform("none", 64, [0.0] * 3, [1.0] * 3)
    out = view.batch(view.image(torch.from_numpy(image).permute(2, 0, 1))[None])[0]
    assert out.shape == (3, 64, 64)
    assert torch.all(out == 1.0)  # all of it from the white middle


def test_the_datamodule_serves_mixed_sizes_at_the_image_size(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    files = []
    for i, side in enumerate([20, 24, 28, 20, 24, 28]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (side, side + 4, 3), dtype=np.uint8)).save(files[-1])
    labelled = LabeledImages(ImageFiles(files), np.array([0, 0, 0, 0, 1, 1]), ["a", "b"])
    splits = DataSplits(train=labelled, test=labelled)
    with pytest.raises(ValueError, match="data.image_size"):
        LongTailDataModule(splits, views=["standard"], num_workers=0)
    data = LongTailDataModule(splits, views=["standard", "sim"], batch_size=4, num_workers=0, image_size=16)
    views, labels, _ = data.finish(next(iter(data.train_dataloader())))
    assert views.shape == (4, 2, 3, 16, 16)
    images, _ = data.finish(next(iter(data.test_dataloader())))
    assert images.shape == (4, 3, 16, 16)


def test_batches_are_the_same_from_any_number_of_loader_processes():
    rng = np.random.default_rng(5)
    images = LabeledImages(rng.integers(0, 256, (24, 12, 12, 3), dtype=np.uint8), np.arange(24) % 2, ["a", "b"])
    splits = DataSplits(train=images, test=images)
    batches = []
    for workers in (0, 2):
        data = LongTailDataModule(splits, views=["auto+cutout", "sim"], batch_size=8, num_workers=workers, seed=3)
        batches.append([data.finish(batch)[0] for batch in data.train_dataloader()])
    assert len(batches[0]) == 3
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_test_images_of_other_sizes_are_evaluated_at_the_training_side(tmp_path):
    from PIL import Image

    files = []
    for i, (height, width) in enumerate([(10, 14), (20, 12)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(files[-1])
    train = LabeledImages(constant_images(4, 8), np.array([0, 0, 1, 1]), ["a", "b"])
    test = LabeledImages(ImageFiles(files), np.array([0, 1]), ["a", "b"])
    data = LongTailDataModule(DataSplits(train=train, test=test), views=["standard"], num_workers=0)
    images, labels = data.finish(next(iter(data.test_dataloader())))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]


def test_image_files_index_like_arrays(tmp_path):
    files = ImageFiles([tmp_path / f"{i}.png" for i in range(4)])
    assert [p.name for p in files[np.array([False, True, True, False])].files] == ["1.png", "2.png"]
    assert [p.name for p in files[np.array([3, 0])].files] == ["3.png", "0.png"]


def test_views_wholly_in_the_batch_stage_leave_the_loader_only_the_rows_to_read():
    """On 32-pixel images at their own side, the crop, the flip and AutoAugment all run
    per batch: the loader's batch is the stored images, once per view."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    data = dataset(images, ["auto+cutout", "standard"])
    assert not data.transform.per_image
    batch = data.__getitems__([(4, 1), (0, 2), (4, 3)])
    expected = torch.from_numpy(images[[4, 0, 4]]).permute(0, 3, 1, 2)
    assert batch.images.shape == (3, 2, 3, 32, 32)
    assert torch.equal(batch.images[:, 0], expected) and torch.equal(batch.images[:, 1], expected)
    assert dataset(images, ["auto", "rand"]).transform.per_image  # RandAugment stays per image
