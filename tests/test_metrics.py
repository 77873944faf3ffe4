"""Accuracy overall, per class and on the many/medium/few-shot groups, on hand-made cases."""

import pytest
import torch

from longtail.evaluation import shot_accuracy

# train counts [500, 100, 20, 5]: many, medium (exactly 100), medium (exactly 20), few
TRAIN_COUNTS = [500, 100, 20, 5]


def _hand_case():
    # class 0: 4 images, 3 right  -> 75 %
    # class 1: 2 images, 1 right  -> 50 %
    # class 2: 3 images, 2 right  -> 66.67 %
    # class 3: 1 image,  0 right  -> 0 %
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    predictions = torch.tensor([0, 0, 0, 2, 1, 0, 2, 2, 1, 0])
    return predictions, targets


def test_shot_accuracy_on_a_hand_made_case():
    predictions, targets = _hand_case()
    result = shot_accuracy(predictions, targets, TRAIN_COUNTS)
    assert result["overall"] == pytest.approx(100 * 6 / 10)
    assert result["per_class"] == pytest.approx([75.0, 50.0, 200 / 3, 0.0])
    assert result["many"] == pytest.approx(75.0)
    # the MEAN of the per-class accuracies (58.33), not the pooled 3 of 5 (60)
    assert result["medium"] == pytest.approx((50.0 + 200 / 3) / 2)
    assert result["medium"] != pytest.approx(60.0)
    assert result["few"] == pytest.approx(0.0)
    assert len(result["per_class"]) == 4


def test_shot_accuracy_of_a_perfect_and_of_an_always_wrong_predictor():
    _, targets = _hand_case()
    perfect = shot_accuracy(targets, targets, TRAIN_COUNTS)
    assert perfect["overall"] == pytest.approx(100.0)
    assert perfect["per_class"] == pytest.approx([100.0] * 4)
    assert perfect["many"] == perfect["medium"] == perfect["few"] == pytest.approx(100.0)
    wrong = shot_accuracy((targets + 1) % 4, targets, TRAIN_COUNTS)
    assert wrong["overall"] == pytest.approx(0.0)
    assert wrong["many"] == wrong["medium"] == wrong["few"] == pytest.approx(0.0)


def test_a_class_without_test_images_is_none_and_left_out_of_its_group():
    # class 4 (few, 3 training images) has no test image
    predictions, targets = _hand_case()
    predictions[9] = 3  # class 3 now right: 100 %
    predictions = torch.cat([predictions, torch.tensor([1])])
    targets = torch.cat([targets, torch.tensor([1])])  # class 1: 3 images, 2 right
    result = shot_accuracy(predictions, targets, TRAIN_COUNTS + [3])
    assert result["per_class"][4] is None
    assert result["per_class"][:4] == pytest.approx([75.0, 200 / 3, 200 / 3, 100.0])
    assert result["few"] == pytest.approx(100.0)  # class 3 alone, not (100 + 0) / 2
    assert result["medium"] == pytest.approx(200 / 3)
    assert result["overall"] == pytest.approx(100 * 8 / 11)


def test_a_group_whose_classes_have_no_test_images_is_none():
    targets = torch.tensor([0, 0, 1])
    predictions = torch.tensor([0, 1, 1])
    # class 2 is few-shot but has no test image
    result = shot_accuracy(predictions, targets, [500, 300, 10])
    assert result["few"] is None
    assert result["medium"] is None
    assert result["many"] == pytest.approx((50.0 + 100.0) / 2)
    assert result["per_class"][:2] == pytest.approx([50.0, 100.0])
    assert result["per_class"][2] is None


def test_an_empty_few_group_is_none():
    targets = torch.tensor([0, 1, 1, 1])
    predictions = torch.tensor([0, 1, 0, 0])
    result = shot_accuracy(predictions, targets, [1000, 50])
    assert result["few"] is None
    assert result["many"] == pytest.approx(100.0)
    assert result["medium"] == pytest.approx(100 / 3)
    assert result["overall"] == pytest.approx(50.0)


def test_the_group_thresholds_can_be_changed():
    predictions, targets = _hand_case()
    # many > 400: class 0; few < 50: classes 2 and 3; medium: class 1
    result = shot_accuracy(predictions, targets, TRAIN_COUNTS, many=400, few=50)
    assert result["many"] == pytest.approx(75.0)
    assert result["medium"] == pytest.approx(50.0)
    assert result["few"] == pytest.approx((200 / 3 + 0.0) / 2)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError):
        shot_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]), [5, 5])
    with pytest.raises(ValueError):
        shot_accuracy(torch.tensor([0]), torch.tensor([0, 1]), [5, 5])
