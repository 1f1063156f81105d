"""Mining rules checked against brute-force loops over every pair and triplet."""

import numpy as np
import pytest
from keras import ops

from embedding_net.mining import rules as mining
from embedding_net.mining import semi_hard
from embedding_net.mining import selection
from embedding_net.mining.registry import check_mining, list_minings
from embedding_net.mining.distances import pairwise_distances


def to_numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def random_labels(rng, batch=12):
    """Labels with repeated classes and at least one single-image class, shuffled."""
    sizes = [4, 3, 2, 1, 1, 1]
    labels = np.repeat(np.arange(len(sizes)), sizes)[:batch]
    return rng.permutation(labels).astype("int32")


def random_distances(seed, batch=12, dim=6):
    """A real distance matrix (euclidean between random embeddings) and labels."""
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, batch)
    embeddings = rng.normal(size=(batch, dim)).astype("float32")
    return labels, to_numpy(pairwise_distances(embeddings, "euclidean"))


def tied_distances(seed, batch=10):
    """A symmetric matrix of small integers, zero diagonal: many exact ties d(a, n) == d(a, p)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=batch).astype("int32")
    upper = np.triu(rng.integers(1, 4, size=(batch, batch)), 1)
    return labels, (upper + upper.T).astype("float32")


def loop_positive(labels):
    n = len(labels)
    return np.array([[a != j and labels[a] == labels[j] for j in range(n)] for a in range(n)])


def loop_negative(labels):
    n = len(labels)
    return np.array([[labels[a] != labels[j] for j in range(n)] for a in range(n)])


def loop_semi_hard(distances, labels, a, p):
    """FaceNet's rule for the pair (a, p), written out: None when a has no negative."""
    negatives = [float(distances[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
    if not negatives:
        return None
    farther = [d for d in negatives if d > float(distances[a, p])]
    return min(farther) if farther else max(negatives)


def masks(labels):
    labels = ops.convert_to_tensor(labels)
    return mining.positive_mask(labels), mining.negative_mask(labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_match_loops(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng)
    positives, negatives = masks(labels)
    np.testing.assert_array_equal(to_numpy(positives), loop_positive(labels))
    np.testing.assert_array_equal(to_numpy(negatives), loop_negative(labels))
    # Column labels [B, 1] give the same masks.
    column = ops.convert_to_tensor(labels[:, None])
    np.testing.assert_array_equal(to_numpy(mining.positive_mask(column)), loop_positive(labels))
    np.testing.assert_array_equal(to_numpy(mining.negative_mask(column)), loop_negative(labels))


def test_masks_edge_cases():
    distinct = np.arange(5, dtype="int32")
    positives, negatives = masks(distinct)
    assert not to_numpy(positives).any()
    np.testing.assert_array_equal(to_numpy(negatives), ~np.eye(5, dtype=bool))
    same = np.zeros(5, dtype="int32")
    positives, negatives = masks(same)
    np.testing.assert_array_equal(to_numpy(positives), ~np.eye(5, dtype=bool))
    assert not to_numpy(negatives).any()


@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_hardest_positive_and_negative_match_loops(make):
    for seed in range(3):
        labels, distances = make(seed)
        positives, negatives = masks(labels)
        d = ops.convert_to_tensor(distances)
        hardest_positive = to_numpy(mining.hardest_positive(d, positives))
        hardest_negative = to_numpy(mining.hardest_negative(d, negatives))
        n = len(labels)
        for a in range(n):
            pos = [distances[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
            neg = [distances[a, j] for j in range(n) if labels[j] != labels[a]]
            assert hardest_positive[a] == (max(pos) if pos else 0.0), (seed, a)
            if neg:
                assert hardest_negative[a] == min(neg), (seed, a)
            else:
                assert hardest_negative[a] > distances.max(), (seed, a)


def test_hardest_negative_without_negatives_is_above_every_distance():
    labels = np.zeros(4, dtype="int32")
    distances = np.array(
        [[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], dtype="float32"
    )
    _, negatives = masks(labels)
    hardest = to_numpy(mining.hardest_negative(ops.convert_to_tensor(distances), negatives))
    assert np.all(np.isfinite(hardest))
    assert np.all(hardest > distances.max())


def check_semi_hard(labels, distances):
    positives, negatives = masks(labels)
    chosen, has_negative = semi_hard.semi_hard_negative(
        ops.convert_to_tensor(distances), positives, negatives
    )
    chosen, has_negative = to_numpy(chosen), to_numpy(has_negative)
    n = len(labels)
    assert chosen.shape == (n, n) and has_negative.shape == (n,)
    checked = 0
    for a in range(n):
        assert bool(has_negative[a]) == any(labels[j] != labels[a] for j in range(n)), a
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            want = loop_semi_hard(distances, labels, a, p)
            if want is None:
                continue
            assert chosen[a, p] == np.float32(want), (a, p, chosen[a, p], want)
            checked += 1
    return checked


@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_semi_hard_negative_matches_loop(make):
    checked = sum(check_semi_hard(*make(seed)) for seed in range(4))
    assert checked > 20  # the batches do contain positive pairs


def many_positives(seed, tied):
    """A batch where an anchor has 10 positives, more than the comparison path takes."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat([0, 1, 2], [11, 6, 3])).astype("int32")
    if tied:
        upper = np.triu(rng.integers(1, 4, size=(20, 20)), 1)
        return labels, (upper + upper.T).astype("float32")
    embeddings = rng.normal(size=(20, 5)).astype("float32")
    return labels, to_numpy(pairwise_distances(embeddings, "euclidean"))


@pytest.mark.parametrize("tied", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("batch", ["p_by_k", "many_positives", "large_batch"])
def test_semi_hard_negative_takes_the_path_its_batch_needs(batch, tied, monkeypatch):
    """Up to 8 positives per anchor: [B, M, B] comparisons; more, or a batch whose [B, M, B]
    would exceed MAX_COMPARISON_VALUES: sorting. Both match the loop."""
    if batch == "large_batch":  # a P x K batch, as if B were thousands
        monkeypatch.setattr(mining, "MAX_COMPARISON_VALUES", 20 * 20)
    calls = []
    for name in ("_semi_hard_by_comparison", "_semi_hard_by_sorting"):
        original = getattr(semi_hard, name)
        monkeypatch.setattr(semi_hard, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    checked = 0
    for seed in range(3):
        if batch == "many_positives":
            labels, distances = many_positives(seed, tied)
        else:
            labels, distances = tied_distances(seed, 12) if tied else random_distances(seed)
        checked += check_semi_hard(labels, distances)
    expected = "_semi_hard_by_comparison" if batch == "p_by_k" else "_semi_hard_by_sorting"
    assert calls and set(calls) == {expected}
    assert checked > 20


def test_semi_hard_negative_in_a_graph_with_an_unknown_batch_size():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
    def chosen(distances, labels):
        positives, negatives = mining.positive_mask(labels), mining.negative_mask(labels)
        return semi_hard.semi_hard_negative(distances, positives, negatives)[0]

    for labels, distances in (random_distances(0, 12), many_positives(0, False)):
        positives, negatives = masks(labels)
        eager, _ = semi_hard.semi_hard_negative(ops.convert_to_tensor(distances), positives, negatives)
        graph = chosen(distances, labels)
        keep = to_numpy(positives)
        np.testing.assert_array_equal(to_numpy(graph)[keep], to_numpy(eager)[keep])


def test_semi_hard_negative_ties_by_hand():
    """Negatives exactly as far as the positive are not "farther": FaceNet's rule is strict.

    labels [0, 0, 1, 1, 1]; symmetric distances
        d01=1, d02=1, d03=2, d04=0.5, d12=1, d13=1, d14=0.5, d23=3, d24=2, d34=1.
    (0,1): negatives {1, 2, 0.5}; strictly > 1: {2}            -> 2   (">=" would give 1)
    (1,0): negatives {1, 1, 0.5}; none > 1: farthest           -> 1
    (2,3): negatives {1, 1}; none > 3: farthest                -> 1
    (2,4): negatives {1, 1}; none > 2: farthest                -> 1
    (3,2): negatives {2, 1}; none > 3: farthest                -> 2
    (3,4): negatives {2, 1}; strictly > 1: {2}                 -> 2   (">=" would give 1)
    (4,2), (4,3): negatives {0.5, 0.5}; none farther: farthest -> 0.5
    """
    labels = np.array([0, 0, 1, 1, 1], dtype="int32")
    upper = {(0, 1): 1.0, (0, 2): 1.0, (0, 3): 2.0, (0, 4): 0.5, (1, 2): 1.0, (1, 3): 1.0,
             (1, 4): 0.5, (2, 3): 3.0, (2, 4): 2.0, (3, 4): 1.0}
    distances = np.zeros((5, 5), dtype="float32")
    for (i, j), value in upper.items():
        distances[i, j] = distances[j, i] = value
    positives, negatives = masks(labels)
    chosen, has_negative = semi_hard.semi_hard_negative(
        ops.convert_to_tensor(distances), positives, negatives
    )
    chosen = to_numpy(chosen)
    expected = {(0, 1): 2.0, (1, 0): 1.0, (2, 3): 1.0, (2, 4): 1.0, (3, 2): 2.0, (3, 4): 2.0,
                (4, 2): 0.5, (4, 3): 0.5}
    for (a, p), value in expected.items():
        assert chosen[a, p] == value, (a, p, chosen[a, p], value)
    assert to_numpy(has_negative).all()
    assert check_semi_hard(labels, distances) == len(expected)


def test_semi_hard_negative_without_negatives():
    labels = np.zeros(4, dtype="int32")
    distances = np.array(
        [[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], dtype="float32"
    )
    positives, negatives = masks(labels)
    chosen, has_negative = semi_hard.semi_hard_negative(
        ops.convert_to_tensor(distances), positives, negatives
    )
    assert not to_numpy(has_negative).any()
    assert np.all(np.isfinite(to_numpy(chosen)))


@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_batch_all_triplet_values_match_loop(make):
    margin = 0.3
    labels, distances = make(0)
    values, valid = mining.batch_all_triplet_values(
        ops.convert_to_tensor(distances), ops.convert_to_tensor(labels), margin
    )
    values, valid = to_numpy(values), to_numpy(valid)
    n = len(labels)
    assert values.shape == valid.shape == (n, n, n)
    count = 0
    for a in range(n):
        for p in range(n):
            for m in range(n):
                want_valid = p != a and labels[p] == labels[a] and labels[m] != labels[a]
                assert bool(valid[a, p, m]) == want_valid, (a, p, m)
                want = float(distances[a, p]) - float(distances[a, m]) + margin
                assert values[a, p, m] == pytest.approx(want, rel=1e-5, abs=1e-6), (a, p, m)
                count += want_valid
    assert count > 0


def test_unknown_mining_raises_with_value():
    for name in ["hardest", "semi-hard", "", None]:
        with pytest.raises(ValueError) as info:
            check_mining(name)
        assert repr(name) in str(info.value)


# Generator rules: one negative for every anchor-positive pair (mining.select_negatives).

MODES = list_minings("triplets")


def loop_select(distances, labels, a, p, margin, mode, keys):
    """The rule for the pair (a, p), written out over every n in float32 like the vectorised code:
    (candidate negatives, value of each negative, hardest value); None when a has no negative."""
    negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
    if not negatives:
        return None
    values = {n: np.float32(distances[a, p]) - np.float32(distances[a, n]) + np.float32(margin)
              for n in negatives}
    if mode == "random":
        candidates = negatives
    elif mode in ("hard", "random_hard"):
        candidates = [n for n in negatives if values[n] > 0]
    else:
        candidates = [n for n in negatives if values[n] > 0 and distances[a, n] > distances[a, p]]
    return candidates, values, max(values.values())


def run_select(labels, distances, margin, mode, keys):
    anchors, positives = mining.anchor_positive_pairs(ops.convert_to_tensor(labels))
    chosen, values, qualified = selection.select_negatives(
        ops.convert_to_tensor(distances), ops.convert_to_tensor(labels), anchors, positives,
        margin, mode, None if keys is None else ops.convert_to_tensor(keys))
    return to_numpy(anchors), to_numpy(positives), to_numpy(chosen), to_numpy(values), to_numpy(qualified)


def check_select(labels, distances, margin, mode, rng):
    """Compares every pair with `loop_select`; returns (qualified, not qualified) counts."""
    n = len(labels)
    pairs = int(loop_positive(labels).sum())
    keys = None if mode == "hard" else rng.random((pairs, n)).astype("float32")
    anchors, positives, chosen, values, qualified = run_select(labels, distances, margin, mode, keys)
    want_pairs = [(a, p) for a in range(n) for p in range(n) if loop_positive(labels)[a, p]]
    assert list(zip(anchors.tolist(), positives.tolist())) == want_pairs
    counts = [0, 0]
    for i, (a, p) in enumerate(want_pairs):
        expected = loop_select(distances, labels, a, p, margin, mode, None)
        if expected is None:
            assert chosen[i] == -1 and not qualified[i], (a, p)
            continue
        candidates, loop_values, hardest = expected
        assert bool(qualified[i]) == bool(candidates), (mode, a, p)
        assert labels[chosen[i]] != labels[a], (mode, a, p)
        assert values[i] == loop_values[chosen[i]], (mode, a, p, values[i], loop_values[chosen[i]])
        if not candidates or mode == "hard":
            # Not qualified (or `hardest`): the hardest negative, largest value.
            assert values[i] == hardest, (mode, a, p)
        else:
            # Random rules: the candidate with the largest key, so uniform keys pick uniformly.
            assert chosen[i] == max(candidates, key=lambda m: keys[i, m]), (mode, a, p)
        counts[0 if candidates else 1] += 1
    return counts


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_select_negatives_matches_loop(make, mode):
    rng = np.random.default_rng(5)
    counts = np.zeros(2, int)
    for seed in range(4):
        labels, distances = make(seed)
        for margin in (0.0, 0.5, 1.5):
            counts += check_select(labels, distances, margin, mode, rng)
    assert counts[0] > 20  # qualified pairs checked
    if mode != "random":  # every pair with a negative qualifies under `random`
        assert counts[1] > 5  # and pairs that did not, filled with their hardest negative


def test_select_negatives_without_negatives_or_positives():
    labels = np.zeros(4, dtype="int32")
    distances = tied_distances(0, batch=4)[1]
    for mode in MODES:
        _, _, chosen, _, qualified = run_select(labels, distances, 0.2, mode, np.zeros((12, 4), "float32"))
        np.testing.assert_array_equal(chosen, -1)
        assert not qualified.any()
    distinct = np.arange(4, dtype="int32")  # no positive pair at all
    anchors, _, chosen, values, qualified = run_select(distinct, distances, 0.2, "semi_hard",
                                                       np.zeros((0, 4), "float32"))
    assert anchors.shape == chosen.shape == values.shape == qualified.shape == (0,)


@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_generator_rules_agree_with_in_batch_rules(make):
    """`hardest` picks `hardest_negative`'s distance; the `semihard` window is non-empty exactly
    when `semi_hard_negative`'s choice lies in it, and then that choice is its nearest member;
    the values are those of `batch_all_triplet_values`."""
    margin = 1.5  # wider than the steps of the tied (integer) distances
    checked = 0
    for seed in range(4):
        labels, distances = make(seed)
        positives, negatives = masks(labels)
        d = ops.convert_to_tensor(distances)
        nearest = to_numpy(mining.hardest_negative(d, negatives))
        facenet, _ = semi_hard.semi_hard_negative(d, positives, negatives)
        facenet = to_numpy(facenet)
        all_values, _ = mining.batch_all_triplet_values(d, ops.convert_to_tensor(labels), margin)
        all_values = to_numpy(all_values)
        anchors, pairs_p, hardest, hardest_values, _ = run_select(labels, distances, margin, "hard", None)
        keys = np.random.default_rng(seed).random((len(anchors), len(labels))).astype("float32")
        _, _, semihard, semihard_values, in_window = run_select(labels, distances, margin, "semi_hard", keys)
        for i, (a, p) in enumerate(zip(anchors, pairs_p)):
            if hardest[i] < 0:
                continue
            assert distances[a, hardest[i]] == nearest[a]
            assert hardest_values[i] == all_values[a, p, hardest[i]]
            assert semihard_values[i] == all_values[a, p, semihard[i]]
            c = facenet[a, p]
            facenet_in_window = c > distances[a, p] and (distances[a, p] - c) + np.float32(margin) > 0
            assert bool(in_window[i]) == facenet_in_window, (seed, a, p)
            if in_window[i]:
                window = [distances[a, n] for n in range(len(labels)) if labels[n] != labels[a]
                          and distances[a, n] > distances[a, p]
                          and (distances[a, p] - distances[a, n]) + np.float32(margin) > 0]
                assert c == min(window)
                checked += 1
    assert checked > 3


def test_select_negatives_checks_mode_and_keys():
    labels, distances = random_distances(0)
    for mode in ["semihard", "hardest", "", None]:
        with pytest.raises(ValueError) as info:
            check_mining(mode, "triplets")
        assert repr(mode) in str(info.value)
    with pytest.raises(ValueError, match="random_keys"):
        run_select(labels, distances, 0.2, "random_hard", None)


@pytest.mark.parametrize("make", [random_distances, tied_distances], ids=["random", "ties"])
def test_hardest_pairs_match_loop(make):
    for seed in range(3):
        labels, distances = make(seed)
        n = len(labels)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        positive = [(i, j) for i, j in pairs if labels[i] == labels[j]]
        negative = [(i, j) for i, j in pairs if labels[i] != labels[j]]
        num_positive, num_negative = min(4, len(positive)), min(6, len(negative))
        got_positive, got_negative = (to_numpy(x) for x in selection.hardest_pairs(
            ops.convert_to_tensor(distances), ops.convert_to_tensor(labels), num_positive, num_negative))
        assert got_positive.shape == (num_positive, 2) and got_negative.shape == (num_negative, 2)
        assert all(tuple(pair) in positive for pair in got_positive.tolist())
        assert all(tuple(pair) in negative for pair in got_negative.tolist())
        assert len({tuple(p) for p in got_positive.tolist()}) == num_positive
        assert len({tuple(p) for p in got_negative.tolist()}) == num_negative
        # Hardest first: the farthest positives and the nearest negatives, ties in row-major order.
        want_positive = sorted(positive, key=lambda ij: -distances[ij])[:num_positive]
        want_negative = sorted(negative, key=lambda ij: distances[ij])[:num_negative]
        assert [tuple(p) for p in got_positive.tolist()] == want_positive
        assert [tuple(p) for p in got_negative.tolist()] == want_negative
