import numpy as np

from fedser_shared.metrics import confusion_matrix, per_class_recall, uar


def test_uar_is_the_mean_of_per_class_recall_not_accuracy() -> None:
    y_true = np.array([0] * 90 + [1] * 10)
    y_pred = np.array([0] * 90 + [0] * 10)  # always "class 0": 90% accuracy
    matrix = confusion_matrix(y_true, y_pred, 2)
    assert matrix.tolist() == [[90, 0], [10, 0]]
    np.testing.assert_allclose(per_class_recall(matrix), [1.0, 0.0])
    assert uar(matrix) == 0.5


def test_classes_without_examples_are_left_out_of_uar() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 4)
    recalls = per_class_recall(matrix)
    assert np.isnan(recalls[2]) and np.isnan(recalls[3])
    assert uar(matrix) == 0.75


def test_summed_confusion_matrices_pool_clients() -> None:
    a = confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    b = confusion_matrix(np.array([1, 1]), np.array([1, 1]), 2)
    assert uar(a + b) == (1.0 + 2 / 3) / 2
