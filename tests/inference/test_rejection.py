"""Class radii (`embedding_net.inference.rejection`): calibrated values against a brute-force
reference, and a gallery that answers "unknown" to a query the global threshold accepts."""

import json

import numpy as np
import pytest

from embedding_net.errors import EncodingsError
from embedding_net.inference.encodings import load_encodings, make_encodings, save_encodings
from embedding_net.inference.gallery import Gallery, open_gallery, save_encodings_index
from embedding_net.inference.rejection import (MIN_RADIUS_SHARE, calibrate, calibrate_index, check_rejection,
                                               leave_one_out_distances, reject)


def blobs(spreads=(0.05, 0.3, 0.1), per_class=12, dimension=8, seed=0):
    """Classes around well separated centres (10 apart), each with its own spread."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(len(spreads), dimension)
    labels = np.repeat(np.arange(len(spreads)), per_class)
    vectors = centres[labels] + np.asarray(spreads)[labels, None] * rng.standard_normal((len(labels), dimension))
    return vectors.astype(np.float32), labels, [f"class_{c}" for c in range(len(spreads))]


def brute_force(vectors, labels, target_loss):
    """Radii and scale by loops over the images of each class (the module docstring's rules)."""
    def dist(i, j):
        return np.linalg.norm(vectors[i] - vectors[j])

    members = {c: [i for i in range(len(labels)) if labels[i] == c] for c in set(labels.tolist())}
    nearest = {i: min(dist(i, j) for j in group if j != i) for group in members.values() if len(group) > 1
               for i in group}
    medians = {c: np.median([nearest[i] for i in group]) for c, group in members.items() if len(group) > 1}
    default = np.median(list(medians.values()))
    floor = MIN_RADIUS_SHARE * default
    radii = {c: max(m, floor) for c, m in medians.items()}
    ratios = []
    for group in members.values():
        for i in group if len(group) > 2 else []:  # the class without i: each other's nearest, median
            others = [min(dist(j, k) for k in group if k not in (i, j)) for j in group if j != i]
            ratios.append(nearest[i] / max(np.median(others), floor))
    level = min(1.0, (1 - target_loss) * (1 + 1 / len(ratios)))
    scale = sorted(ratios)[int(np.ceil(level * len(ratios))) - 1]
    return radii, default, scale


@pytest.mark.parametrize("per_class", [3, 4, 12])  # in small classes leaving one out moves the median
def test_calibration_matches_a_brute_force_reference(per_class):
    # float32 distances of vectors 10 from the origin: |a|^2 - 2ab + |b|^2 loses ~4 digits.
    vectors, labels, names = blobs(per_class=per_class)
    # A lone image and a pair of duplicates.
    vectors = np.concatenate([vectors, vectors[:1] + 100, vectors[[per_class, per_class]]])
    labels = np.concatenate([labels, [3], [4, 4]])
    names = names + ["alone", "duplicates"]
    found = calibrate(vectors, labels, names, target_loss=0.3)  # a quantile inside, not the largest
    radii, default, scale = brute_force(vectors, labels, 0.3)
    assert found["method"] == "class_radius" and found["calibrated_on"] == "gallery (leave-one-out)"
    assert set(found["radii"]) == {"class_0", "class_1", "class_2", "duplicates"}  # "alone" has no pair
    for c, radius in radii.items():
        assert found["radii"][names[c]] == pytest.approx(radius, rel=1e-3)
    assert found["default_radius"] == pytest.approx(default, rel=1e-3)
    assert found["radii"]["duplicates"] == pytest.approx(MIN_RADIUS_SHARE * default, rel=1e-3)  # floored, not 0
    assert found["scale"] == pytest.approx(scale, rel=1e-3)
    assert json.loads(json.dumps(found)) == found  # plain JSON, as stored in metadata


def test_the_radius_without_each_image_by_hand():
    # Three images at 0, 1 and 3 on a line: nearest distances 1, 1, 2. Without image 0, images 1
    # and 2 are each other's nearest (2, 2): median 2; without 1: 3, 3; without 2: 1, 1.
    ids, nearest, without = leave_one_out_distances(np.array([[0.0], [1.0], [3.0]]), [0, 0, 0])
    assert nearest.tolist() == [1, 1, 2] and without.tolist() == pytest.approx([2, 3, 1])


def test_leave_one_out_caps_each_class_and_skips_lone_images():
    vectors, labels, _ = blobs(per_class=30)
    ids, distances, without = leave_one_out_distances(vectors, np.r_[labels, 9], max_per_class=10)
    assert len(ids) == 30 and np.bincount(labels[ids]).tolist() == [10, 10, 10] and (distances > 0).all()
    assert (without > 0).all() and np.isnan(leave_one_out_distances(vectors[:2], [0, 0])[2]).all()
    assert calibrate(vectors[:1], [0], ["a"]) is None  # no class with two images: nothing to calibrate


def test_held_out_images_set_the_scale():
    vectors, labels, names = blobs()
    shifted = vectors[::2] + 0.5  # new images farther from their class than the gallery's own
    own = calibrate(vectors, labels, names, target_loss=0.0)
    held = calibrate(vectors, labels, names, target_loss=0.0, held_out=(shifted, labels[::2]))
    assert held["calibrated_on"] == f"held-out images ({len(shifted)})" and held["radii"] == own["radii"]
    assert held["scale"] > own["scale"]
    gallery = Gallery.from_encodings(make_encodings(vectors, labels, names, [""] * len(labels)))
    rows = gallery.classify(shifted, top_k=1, rejection=held)
    assert [row["prediction"] for row in rows] == [names[c] for c in labels[::2]]  # target 0: all kept
    with pytest.raises(ValueError, match="target_loss"):
        calibrate(vectors, labels, names, target_loss=1.0)


def test_class_radius_rejects_what_the_global_threshold_accepts(tmp_path):
    vectors, labels, names = blobs()
    calibration = calibrate(vectors, labels, names)
    metadata = {"distance": "euclidean", "threshold": 4.0, "rejection": calibration}
    save_encodings(str(tmp_path / "g.npz"), make_encodings(vectors, labels, names, [""] * len(labels), metadata))
    encodings = load_encodings(str(tmp_path / "g.npz"))
    save_encodings_index(str(tmp_path / "g.enidx"), encodings)
    # 1.0 from class_0 (spread 0.05): inside the global 4.0, far outside the tight class.
    outsider = vectors[0] + np.r_[1.0, np.zeros(7)]
    inlier = vectors[13] + 0.01  # beside an image of class_1 (spread 0.3)
    queries = np.stack([outsider, inlier]).astype(np.float32)
    for path in ("g.npz", "g.enidx"):
        gallery = open_gallery(str(tmp_path / path))
        assert gallery.rejection == calibration
        accepted = gallery.classify(queries, top_k=2, threshold=4.0)
        assert [row["prediction"] for row in accepted] == ["class_0", "class_1"]
        answered = gallery.classify(queries, top_k=2, threshold=4.0, rejection=gallery.rejection)
        assert [row["prediction"] for row in answered] == ["unknown", "class_1"]
        assert answered[0]["nearest"] == accepted[0]["nearest"]  # the evidence is still shown


def test_classes_without_a_radius_take_the_default_and_bad_values_are_refused():
    vectors, labels, names = blobs()
    calibration = calibrate(vectors, labels, names)
    rows = [{"prediction": "new", "distance": 0.9 * calibration["scale"] * calibration["default_radius"],
             "nearest": [("new", 0.0)]},
            {"prediction": "new", "distance": 1.1 * calibration["scale"] * calibration["default_radius"],
             "nearest": [("new", 0.0)]}]
    assert [row["prediction"] for row in reject(rows, calibration)] == ["new", "unknown"]
    for bad in ({"method": "magic"}, dict(calibration, scale=float("nan")), dict(calibration, radii={"a": -1.0})):
        with pytest.raises(EncodingsError, match="g.npz"):
            check_rejection(bad, "g.npz")


def test_calibrate_index_equals_calibrate_on_its_vectors():
    from embedding_net.index import EmbeddingIndex

    vectors, labels, names = blobs()
    index = EmbeddingIndex.build(vectors, labels, names)
    index.remove_class("class_1")
    keep = labels != 1
    renumbered = np.where(labels[keep] > 1, labels[keep] - 1, labels[keep])
    assert calibrate_index(index) == calibrate(vectors[keep], renumbered, ["class_0", "class_2"])


def test_a_runs_gallery_is_calibrated_on_its_held_out_split():
    from embedding_net.data.folders import ImageFolder
    from embedding_net.inference.encodings import reference_encodings

    vectors, labels, names = blobs()
    train = ImageFolder("train", [f"t{i}.png" for i in range(len(labels))], labels.astype(np.int32), names)
    val = ImageFolder("val", ["v0.png", "v1.png", "v2.png", "v3.png"], np.array([0, 0, 1, 1], np.int32),
                      ["class_2", "other"])
    val_embeddings = np.stack([vectors[-1] + 0.5, vectors[-2] + 0.5, np.zeros(8), np.ones(8)]).astype(np.float32)
    alone = reference_encodings([(train, vectors)], metadata={"distance": "euclidean"})
    held = reference_encodings([(train, vectors)], metadata={"distance": "euclidean"},
                               held_out=[(val, val_embeddings)])
    assert alone.metadata["rejection"] == calibrate(vectors, labels, names)
    # Only the two images of class_2 count ("other" is not in the gallery); they lie far out.
    assert held.metadata["rejection"]["calibrated_on"] == "held-out images (2)"
    assert held.metadata["rejection"]["scale"] > alone.metadata["rejection"]["scale"]
