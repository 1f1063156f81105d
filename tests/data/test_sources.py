"""Issue #3: CSV annotation files and per-class val splits (`embedding_net.data.sources`)."""

import os
import warnings

import cv2
import numpy as np
import pytest

from embedding_net.data.folders import ImageFolder, scan_image_folder
from embedding_net.errors import DatasetError
from embedding_net.data.sources import read_csv_annotations, split_by_class


def imwrite(path, value=0):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imencode(os.path.splitext(path)[1], np.full((4, 4, 3), value, np.uint8))[1].tofile(path)
    return path


def write_csv(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """`tmp_path/images/...`: five files in two folders (folders are not classes here)."""
    root = tmp_path / "images"
    for name in ("x/1.png", "x/2.png", "x/3.png", "y/1.png", "y/2.jpg"):
        imwrite(root / name)
    return root


def assert_error(info, *fragments):
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------- reading


def test_csv_gives_the_same_invariants_as_a_scan(tmp_path, images):
    csv_path = write_csv(tmp_path / "labels.csv", "path,label,notes\n"
                         "y/2.jpg,zebra,\nx/1.png,Apple,a\nx/3.png,zebra,\nx/2.png,10,\ny/1.png,Apple,\n")
    folder = read_csv_annotations(csv_path, str(images))
    assert isinstance(folder, ImageFolder) and folder.root == str(images)
    assert folder.class_names == ["10", "Apple", "zebra"]  # sorted as strings, like folder names
    assert folder.labels.dtype == np.int32
    np.testing.assert_array_equal(folder.labels, [0, 1, 1, 2, 2])
    assert folder.paths == [os.path.join(str(images), *p.split("/"))
                            for p in ["x/2.png", "x/1.png", "y/1.png", "x/3.png", "y/2.jpg"]]
    np.testing.assert_array_equal(folder.class_counts(), [1, 2, 2])


def test_csv_matches_the_scan_of_the_same_folders(tmp_path):
    root = tmp_path / "train"
    rows = ["path,label"]
    for cls, count in (("cat", 3), ("dog", 2), ("ñandú", 2)):
        for i in range(count):
            imwrite(root / cls / f"{i}.png")
            rows.append(f"{cls}/{i}.png,{cls}")
    scanned = scan_image_folder(str(root))
    shuffled = [rows[0], *reversed(rows[1:])]
    read = read_csv_annotations(write_csv(tmp_path / "a.csv", "\n".join(shuffled) + "\n"), str(root))
    assert read.class_names == scanned.class_names and read.paths == scanned.paths
    np.testing.assert_array_equal(read.labels, scanned.labels)


def test_root_defaults_to_the_csv_folder_and_columns_are_named(images):
    csv_path = write_csv(images / "meta.csv", "id;class;file\n1;a;x/1.png\n2;b;y/1.png\n")
    folder = read_csv_annotations(csv_path, path_column="file", label_column="class")
    assert folder.root == str(images) and folder.class_names == ["a", "b"]
    assert folder.paths == [str(images / "x" / "1.png"), str(images / "y" / "1.png")]


@pytest.mark.parametrize("text", [
    "\ufeffpath,label\r\nx/1.png,a\r\ny/1.png,b\r\n",   # Excel: BOM and CRLF
    "path\tlabel\nx/1.png\ta\ny/1.png\tb\n",           # tab-separated
    "path, label\n x/1.png , a \n\ny/1.png,b\n\n",     # spaces and blank lines
    'path,label\n"x/1.png","a"\n"y/1.png",b\n',        # quoted
    "path,label\nx\\1.png,a\n.\\y\\1.png,b\n",          # Windows separators
])
def test_csv_dialects(tmp_path, images, text):
    folder = read_csv_annotations(write_csv(tmp_path / "a.csv", text), str(images))
    assert folder.class_names == ["a", "b"]
    assert folder.paths == [str(images / "x" / "1.png"), str(images / "y" / "1.png")]


def test_non_ascii_labels_and_paths(tmp_path):
    root = tmp_path / "données"
    imwrite(root / "日本" / "写真 1.png")
    imwrite(root / "日本" / "é,è.png")
    csv_path = write_csv(tmp_path / "a.csv", 'path,label\n日本/写真 1.png,ñandú\n"日本/é,è.png",Ωμέγα\n')
    folder = read_csv_annotations(csv_path, str(root))
    assert folder.class_names == ["ñandú", "Ωμέγα"]
    assert [os.path.basename(p) for p in folder.paths] == ["写真 1.png", "é,è.png"]


def test_split_column_selects_rows(tmp_path, images):
    text = "path,label,split\nx/1.png,a,train\nx/2.png,a,val\nx/3.png,a,train\ny/1.png,b,train\ny/2.jpg,b, val\n"
    csv_path = write_csv(tmp_path / "a.csv", text)
    train = read_csv_annotations(csv_path, str(images), split_column="split", split="train")
    val = read_csv_annotations(csv_path, str(images), split_column="split", split="val")
    assert [os.path.relpath(p, images) for p in train.paths] == [os.path.join("x", "1.png"),
                                                                 os.path.join("x", "3.png"),
                                                                 os.path.join("y", "1.png")]
    assert val.class_names == ["a", "b"] and len(val) == 2
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(csv_path, str(images), split_column="split", split="test")
    assert_error(info, csv_path, "no row with split 'test'", "values found: 'train', 'val'")


# ----------------------------------------------------------------------------- errors and warnings


def test_missing_file_and_root(tmp_path, images):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(missing, str(images))
    assert str(info.value) == f"annotation file not found: {missing}"
    csv_path = write_csv(tmp_path / "a.csv", "path,label\nx/1.png,a\n")
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(csv_path, str(tmp_path / "no_root"))
    assert_error(info, csv_path, "root folder", tmp_path / "no_root")


@pytest.mark.parametrize("text, fragments", [
    ("", ["is empty", "'path'", "'label'"]),
    ("file,class\nx/1.png,a\n", ["has no column 'path' (path_column)", "columns found: 'file', 'class'"]),
    ("path,class\nx/1.png,a\n", ["has no column 'label' (label_column)", "columns found: 'path', 'class'"]),
    ("path,label\nx/1.png,a\nx/2.png,\n", ["line 3: empty label in column 'label'"]),
    ("path,label\nx/1.png,a\n,b\n", ["line 3: empty path"]),
    ("path,label\nx/1.png,a\nx/2.png\n", ["line 3: 1 field(s), expected 2"]),
    ("path,label\n/etc/passwd,a\n", ["line 2: absolute path '/etc/passwd' refused"]),
    ("path,label\nC:\\data\\x.png,a\n", ["line 2: absolute path 'C:\\\\data\\\\x.png' refused"]),
    ("path,label\n\\\\server\\share\\x.png,a\n", ["line 2: absolute path"]),
    ("path,label\nx/../../secret.png,a\n", ["line 2: path 'x/../../secret.png' refused: '..' is not allowed"]),
    ("path,label\n..\\x.png,a\n", ["line 2: path '..\\\\x.png' refused"]),
    ("path,label\nx/1.png,a\nx/2.png,a\n./x/1.png,b\n", ["line 4: 'x/1.png' is labelled 'b' here and 'a' on line 2"]),
    ('path,label\n"x/1.png,a\n', ["not valid CSV"]),
])
def test_bad_rows_name_the_file_and_line(tmp_path, images, text, fragments):
    csv_path = write_csv(tmp_path / "a.csv", text)
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(csv_path, str(images))
    assert_error(info, csv_path, *fragments)


def test_not_utf8(tmp_path, images):
    csv_path = write_csv(tmp_path / "a.csv", "path,label\nx/1.png,ñandú\n", encoding="latin-1")
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(csv_path, str(images))
    assert_error(info, csv_path, "not UTF-8")


def test_duplicate_rows_are_dropped_with_one_warning(tmp_path, images):
    text = "path,label\nx/1.png,a\nx/1.png,a\ny/1.png,b\n./x//1.png, a\ny/1.png,b\n"
    csv_path = write_csv(tmp_path / "a.csv", text)
    with pytest.warns(UserWarning) as record:
        folder = read_csv_annotations(csv_path, str(images))
    assert [str(w.message) for w in record] == [
        f"dropped 3 duplicate row(s) of {csv_path} (same path and label as an earlier row) on line(s) 3, 5, 6"]
    assert len(folder) == 2


def test_missing_images_are_skipped_with_one_warning(tmp_path, images):
    rows = ["path,label", "x/1.png,a", "y/1.png,b", "x/2.png,a"] + [f"gone/{i:02d}.png,c" for i in range(12)]
    (images / "x" / "dir.png").mkdir()  # a folder is not an image file
    rows.append("x/dir.png,a")
    csv_path = write_csv(tmp_path / "a.csv", "\n".join(rows) + "\n")
    with pytest.warns(UserWarning) as record:
        folder = read_csv_annotations(csv_path, str(images))
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"skipped 13 image(s) listed in {csv_path} but not found under {images}: gone/00.png, ")
    assert message.endswith("gone/09.png and 3 more")
    assert folder.class_names == ["a", "b"] and len(folder) == 3


def test_no_images_at_all(tmp_path, images):
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(write_csv(tmp_path / "a.csv", "path,label\n\n"), str(images))
    assert_error(info, "lists no images")
    with pytest.raises(DatasetError) as info:
        read_csv_annotations(write_csv(tmp_path / "b.csv", "path,label\nq.png,a\nr.png,a\n"), str(images))
    assert_error(info, "none of the 2 images listed", images, "q.png")


# ----------------------------------------------------------------------------- split_by_class


def folder_of(counts):
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    names = [f"c{i:02d}" for i in range(len(counts))]
    return ImageFolder("root", [f"{names[l]}/{i}.png" for i, l in enumerate(labels)], labels, names)


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.25, 0.5, 0.75, 0.9])
def test_split_counts_follow_the_documented_rounding(ratio):
    counts = [1, 2, 3, 4, 5, 7, 10, 20]
    folder = folder_of(counts)
    train, val = split_by_class(folder, ratio, seed=3)
    expected_val = [min(n - 1, int(np.floor(n * ratio + 0.5 + 1e-9))) for n in counts]
    val_counts = dict(zip(val.class_names, val.class_counts()))
    train_counts = dict(zip(train.class_names, train.class_counts()))
    for name, n, v in zip(folder.class_names, counts, expected_val):
        assert val_counts.get(name, 0) == v
        assert train_counts[name] == n - v >= 1  # every class keeps a train image
    assert train_counts["c00"] == 1 and "c00" not in val_counts  # one image: stays in train
    assert sorted(train.paths + val.paths) == sorted(folder.paths)
    assert not set(train.paths) & set(val.paths)
    assert set(val.class_names) <= set(train.class_names)
    for part in (train, val):  # the ImageFolder invariants hold
        assert part.labels.dtype == np.int32 and (np.diff(part.labels) >= 0).all()
        assert part.class_names == sorted(part.class_names)
        for path, label in zip(part.paths, part.labels):
            assert path.startswith(part.class_names[label] + "/")


def test_split_rounding_examples():
    train, val = split_by_class(folder_of([2, 4, 10]), 0.25)
    np.testing.assert_array_equal(val.class_counts(), [1, 1, 3])  # 0.5 -> 1, 1.0 -> 1, 2.5 -> 3
    np.testing.assert_array_equal(train.class_counts(), [1, 3, 7])
    train, val = split_by_class(folder_of([3, 3]), 0.1)  # 0.3 rounds to 0: no val image
    assert len(val) == 0 and val.class_names == [] and len(train) == 6


def test_split_is_seeded_and_deterministic():
    folder = folder_of([10] * 6)
    a = split_by_class(folder, 0.3, seed=1)[1].paths
    assert a == split_by_class(folder, 0.3, seed=1)[1].paths
    assert a != split_by_class(folder, 0.3, seed=2)[1].paths
    # A class's split depends on its name and the seed, not on the other classes.
    fewer = folder.subset(folder.labels != 0)
    assert [p for p in a if not p.startswith("c00/")] == split_by_class(fewer, 0.3, seed=1)[1].paths


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5])
def test_split_ratio_must_be_a_fraction(ratio):
    with pytest.raises(ValueError, match=f"`val_ratio` must be between 0 and 1 .* Received: {ratio}"):
        split_by_class(folder_of([3]), ratio)


def test_split_of_a_csv_folder(tmp_path, images):
    csv_path = write_csv(tmp_path / "a.csv", "path,label\nx/1.png,a\nx/2.png,a\nx/3.png,a\ny/1.png,b\ny/2.jpg,b\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = split_by_class(read_csv_annotations(csv_path, str(images)), 0.4, seed=0)
    np.testing.assert_array_equal(train.class_counts(), [2, 1])
    np.testing.assert_array_equal(val.class_counts(), [1, 1])
