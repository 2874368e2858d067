"""The hashed sign matrix of random projection and SimHash: NumPy and the graph agree bit for bit; fair signs."""

import numpy as np

from operators._hash import signs, signs_tensor


def test_numpy_and_keras_ops_give_the_same_matrix():
    from keras import ops

    for shape, seed in (((37, 11), 0), ((300, 64), 7), ((5, 40000), 123)):  # the last crosses 2**15 entries
        got = ops.convert_to_numpy(signs_tensor(shape, seed, ops.convert_to_tensor(0, "int32")))
        np.testing.assert_array_equal(got, signs(shape, seed))


def test_signs_are_balanced_uncorrelated_and_seeded():
    s = signs((512, 784), 0)
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert abs(s.mean()) < 0.01
    corr = (s @ s.T) / s.shape[1]
    np.fill_diagonal(corr, 0.0)
    assert abs(corr.std() - 1 / np.sqrt(784)) < 0.1 / np.sqrt(784)  # as for independent fair signs
    assert np.abs(corr).max() < 6 / np.sqrt(784)
    other = signs((512, 784), 1)
    assert 0.47 < (other == s).mean() < 0.53
