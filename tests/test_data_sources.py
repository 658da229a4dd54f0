"""Dataset sources: image folders of PNGs, save_to_disk folders, the built-in digits and the Hub path
(offline), with column detection and split naming, read back from what the tests write."""

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from ltkd_hf.data import detect_columns, get_class_counts, load_image_dataset, make_long_tailed


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """load_dataset caches image folders: keep that cache inside the test's temp dir."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def swatch(value):
    """A 6x5 RGB image whose red channel is ``value``: identifies the image after a round trip."""
    pixels = np.zeros((5, 6, 3), dtype=np.uint8)
    pixels[..., 0] = value
    return PILImage.fromarray(pixels)


def image_dict(labels, label_feature, image_name="image", label_name="label", extra=None):
    columns = {image_name: [swatch(10 * i) for i in range(len(labels))], label_name: list(labels)}
    features = {image_name: Image(), label_name: label_feature}
    for name, (values, feature) in (extra or {}).items():
        columns[name], features[name] = values, feature
    return Dataset.from_dict(columns, features=Features(features))


# -- image folder ---------------------------------------------------------------------------------------
def write_image_folder(root, layout):
    """layout: {split: {class_name: n_images}}; the red channel encodes (split, class, image)."""
    for s, (split, classes) in enumerate(layout.items()):
        for c, (name, n) in enumerate(sorted(classes.items())):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                swatch(100 * s + 20 * c + i).save(root / split / name / f"{i}.png")


def red(image):
    return int(np.asarray(image)[0, 0, 0])


def test_image_folder_train_test(tmp_path):
    root = tmp_path / "folder"
    write_image_folder(root, {"train": {"ant": 4, "bee": 3, "cat": 2}, "test": {"ant": 2, "bee": 2, "cat": 2}})
    dd = load_image_dataset(str(root))
    assert set(dd) == {"train", "test"}
    for split, s in (("train", 0), ("test", 1)):
        ds = dd[split]
        assert ds.column_names == ["image", "label"]
        assert ds.features["label"].names == ["ant", "bee", "cat"]
        rows = [(red(ds[i]["image"]), ds[i]["label"]) for i in range(len(ds))]
        # Every image read back belongs to the folder its label names.
        assert all((value - 100 * s) // 20 == label for value, label in rows)
        assert isinstance(ds[0]["image"], PILImage.Image) and ds[0]["image"].size == (6, 5)
    assert get_class_counts(dd["train"]) == [4, 3, 2]
    assert sorted(red(im) for im in dd["train"]["image"]) == [0, 1, 2, 3, 20, 21, 22, 40, 41]


def test_image_folder_valid_subfolder_is_the_test_split(tmp_path):
    root = tmp_path / "tiny"
    write_image_folder(root, {"train": {"a": 2, "b": 2}, "valid": {"a": 1, "b": 1}})
    dd = load_image_dataset(str(root))
    assert len(dd["test"]) == 2 and sorted(red(im) for im in dd["test"]["image"]) == [100, 120]


def test_image_folder_without_split_subfolders_is_refused(tmp_path):
    root = tmp_path / "flat"
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        swatch(c).save(root / name / "0.png")
    with pytest.raises(ValueError, match=r"has splits \['train'\]: no labelled held-out split \(looked for \['test', "
                                         r"'validation', 'valid', 'val'\]\)\..*--test_split.*train/ and test/"):
        load_image_dataset(str(root))


@pytest.mark.parametrize("mistake,match", [
    ("empty class", r"train/crane: the class folder holds no image, so the class would be left out"),
    ("stray image", r"train/stray.png: an image directly under train/, outside any class folder"),
    ("nested image", r"train/bee/more/0.png: an image in a subfolder of the class folder train/bee/"),
    ("linked class", r"train/crane: a class folder that is a symbolic link, which datasets' imagefolder does not "),
])
def test_an_image_folder_that_datasets_would_misread_is_refused_naming_the_path(tmp_path, mistake, match):
    """imagefolder dropped an empty class folder without a word, and an image outside a class folder (or one level
    deeper) broke the labels with a message about --label_column."""
    root = tmp_path / "folder"
    write_image_folder(root, {"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}})
    if mistake == "empty class":
        (root / "train" / "crane").mkdir()
    elif mistake == "linked class":  # its images existed, but imagefolder left the class out: "no training images"
        (root / "train" / "crane").symlink_to(root / "train" / "bee", target_is_directory=True)
    elif mistake == "stray image":
        swatch(1).save(root / "train" / "stray.png")
    else:
        (root / "train" / "bee" / "more").mkdir()
        swatch(2).save(root / "train" / "bee" / "more" / "0.png")
    with pytest.raises(ValueError, match=match):
        load_image_dataset(str(root))


def test_what_datasets_leaves_out_of_an_image_folder_is_not_refused(tmp_path):
    """Jupyter's .ipynb_checkpoints and a zip's __MACOSX folder were refused as class folders holding no image, though
    datasets leaves them out (and the classes came out right)."""
    root = tmp_path / "folder"
    write_image_folder(root, {"train": {"ant": 2, "bee": 1}, "test": {"ant": 1, "bee": 1}})
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "__MACOSX" / "ant").mkdir(parents=True)
    swatch(9).save(root / "train" / "__MACOSX" / "ant" / "._0.png")
    (root / "train" / "bee" / ".thumbs").mkdir()
    swatch(8).save(root / "train" / "bee" / ".thumbs" / "0.png")
    dd = load_image_dataset(str(root))
    assert dd["train"].features["label"].names == ["ant", "bee"] and get_class_counts(dd["train"]) == [2, 1]


def test_long_tail_of_an_image_folder_records_its_source(tmp_path):
    root = tmp_path / "folder"
    write_image_folder(root, {"train": {"a": 8, "b": 8, "c": 8}, "test": {"a": 1, "b": 1, "c": 1}})
    splits = load_image_dataset(str(root)).long_tailed(4)
    lt = splits["train"]
    assert get_class_counts(lt) == [8, 4, 2]  # int(8 * 4**(-c/2))
    assert splits.split_info.class_counts == (8, 4, 2) and splits.split_info.long_tail["imbalance_factor"] == 4
    assert (splits.split_info.source, splits.split_info.source_kind) == (str(root), "local")
    assert (splits.split_info.train_split, splits.split_info.test_split) == ("train", "test")
    assert all(red(row["image"]) // 20 == row["label"] for row in lt)


# -- save_to_disk -------------------------------------------------------------------------------------
def test_save_to_disk_cifar_style_columns_are_standardised(tmp_path):
    fine = ClassLabel(names=["apple", "bear", "cup"])
    coarse = ClassLabel(names=["fruit", "animal"])
    train = image_dict([0, 1, 2, 2], fine, "img", "fine_label", {"coarse_label": ([0, 1, 0, 0], coarse)})
    test = image_dict([2, 1], fine, "img", "fine_label", {"coarse_label": ([0, 1], coarse)})
    DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "cifar"))
    dd = load_image_dataset(str(tmp_path / "cifar"))
    assert dd["train"].column_names == ["image", "label"]
    assert dd["train"].features["label"].names == ["apple", "bear", "cup"]
    assert dd["train"]["label"][:] == [0, 1, 2, 2] and dd["test"]["label"][:] == [2, 1]
    assert [red(im) for im in dd["test"]["image"]] == [0, 10]


def test_imagenet_style_unlabelled_test_split_is_skipped_for_validation(tmp_path):
    names = ClassLabel(names=["x", "y"])
    DatasetDict(
        train=image_dict([0, 1, 1], names),
        validation=image_dict([1, 0], names),
        test=image_dict([-1, -1, -1], names),
    ).save_to_disk(str(tmp_path / "imnet"))
    dd = load_image_dataset(str(tmp_path / "imnet"))
    assert dd["test"]["label"][:] == [1, 0]


def test_split_argument_overrides(tmp_path):
    names = ClassLabel(names=["x", "y"])
    DatasetDict(
        training=image_dict([0, 1, 1, 0], names), test=image_dict([0], names), validation=image_dict([1, 1], names)
    ).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"has splits \['training', 'test', 'validation'\]: no training split 'train'\. "):
        load_image_dataset(str(tmp_path / "d"))
    dd = load_image_dataset(str(tmp_path / "d"), split={"train": "training", "test": "validation"})
    assert len(dd["train"]) == 4 and dd["test"]["label"][:] == [1, 1]
    with pytest.raises(ValueError, match="a mapping must give the keys 'train' and 'test', and may give 'validation'"):
        load_image_dataset(str(tmp_path / "d"), split={"train": "training"})
    # one split in two roles scored (or chose) a model on images it trained on or was scored on: accepted before
    with pytest.raises(ValueError, match=r"the source split 'training' .* would be the train and the test split"):
        load_image_dataset(str(tmp_path / "d"), split={"train": "training", "test": "training"})
    with pytest.raises(ValueError, match=r"split 'test' .* would be the test and the validation split: .*--validation_sp"):
        load_image_dataset(str(tmp_path / "d"), split={"train": "training", "test": "test", "validation": "test"})


def test_saved_single_dataset_is_refused(tmp_path):
    image_dict([0, 1], ClassLabel(names=["a", "b"])).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ValueError, match=r"single saved Dataset.*DatasetDict\(train=..., test=...\)"):
        load_image_dataset(str(tmp_path / "one"))


def test_integer_and_string_labels_become_one_class_label(tmp_path):
    DatasetDict(
        train=image_dict([0, 2, 2], Value("int64")), test=image_dict([1, 3], Value("int64"))
    ).save_to_disk(str(tmp_path / "ints"))
    dd = load_image_dataset(str(tmp_path / "ints"))
    assert dd["train"].features["label"] == dd["test"].features["label"] == ClassLabel(names=["0", "1", "2", "3"])
    assert dd["test"]["label"][:] == [1, 3]
    DatasetDict(
        train=image_dict(["dog", "cat", "dog"], Value("string")), test=image_dict(["emu", "cat"], Value("string"))
    ).save_to_disk(str(tmp_path / "strings"))
    dd = load_image_dataset(str(tmp_path / "strings"))
    assert dd["train"].features["label"].names == ["cat", "dog", "emu"]
    assert dd["train"]["label"][:] == [1, 0, 1] and dd["test"]["label"][:] == [2, 0]


def test_integer_ids_that_are_not_0_to_c_minus_1_are_class_names(tmp_path):
    """ids {3, 7, 12, 40} made 41 classes, 37 of them empty, and the run was refused listing 10 of them."""
    DatasetDict(
        train=image_dict([40, 3, 7, 12, 3], Value("int64")), test=image_dict([12, 40, 7, 3], Value("int64"))
    ).save_to_disk(str(tmp_path / "sparse"))
    dd = load_image_dataset(str(tmp_path / "sparse"))
    assert dd["train"].features["label"].names == ["3", "7", "12", "40"]  # numeric order, not "12" < "3"
    names = dd["train"].features["label"].names
    assert [names[i] for i in dd["train"]["label"][:]] == ["40", "3", "7", "12", "3"]
    assert [names[i] for i in dd["test"]["label"][:]] == ["12", "40", "7", "3"]


def test_integer_ids_take_the_names_of_another_splits_class_label(tmp_path):
    """Plain ids in the training split beside a test split's ClassLabel (a map that dropped the feature) lost the
    test split's names: the classes were "0", "1", "2", and a teacher naming them was refused as another order."""
    DatasetDict(
        train=image_dict([2, 0, 1, 2], Value("int64")),
        test=image_dict([1, 2, 0], ClassLabel(names=["ant", "bee", "cod"])),
    ).save_to_disk(str(tmp_path / "mixed"))
    dd = load_image_dataset(str(tmp_path / "mixed"))
    assert dd["train"].features["label"] == dd["test"].features["label"] == ClassLabel(names=["ant", "bee", "cod"])
    assert dd["train"]["label"][:] == [2, 0, 1, 2] and dd["test"]["label"][:] == [1, 2, 0]


@pytest.mark.parametrize("labels,feature,match", [
    ([0, -1, 1], Value("int64"), r"label column 'label' holds negative class ids \[-1\] \(unlabelled rows\?\); drop"),
    ([0.5, 1.0, 2.0], Value("float32"), r"label column 'label' has type .*float32.*; expected ClassLabel, integers or strings"),
])
def test_labels_that_are_not_classes_are_refused_naming_the_column(tmp_path, labels, feature, match):
    DatasetDict(train=image_dict(labels, feature), test=image_dict(labels[:1], feature)).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=match):
        load_image_dataset(str(tmp_path / "d"))


def test_a_label_column_of_one_class_is_refused_naming_the_column(tmp_path):
    """label_column='coarse_label' (one superclass in the data) failed later with "class_counts must list ... at
    least 2 classes, got [22]", naming no column."""
    names = ClassLabel(names=["a", "b"])
    one = image_dict([0, 1], names, extra={"coarse_label": ([7, 7], Value("int64"))})
    DatasetDict(train=one, test=one).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"label column 'coarse_label' holds 1 class \['7'\]: a classifier needs at "
                                         r"least 2 \(in an image folder, one subfolder per class\); if another "
                                         r"column holds each image's class, pass label_column=<that column>"):
        load_image_dataset(str(tmp_path / "d"), label_column="coarse_label")


def test_an_image_column_named_as_the_label_is_refused_before_reading_it(tmp_path):
    """--label_column img failed with pyarrow's 'Function unique has no kernel' traceback."""
    DatasetDict(train=image_dict([0, 1], ClassLabel(names=["a", "b"])),
                test=image_dict([0], ClassLabel(names=["a", "b"]))).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"label column 'image' has type Image.*expected ClassLabel, integers or str"):
        load_image_dataset(str(tmp_path / "d"), label_column="image")


def test_a_test_label_the_training_split_does_not_name_is_refused_naming_the_split(tmp_path):
    """datasets' bare "Invalid string class label kiwi" named neither the split nor the classes."""
    DatasetDict(train=image_dict([0, 1], ClassLabel(names=["apple", "pear"])),
                test=image_dict(["pear", "kiwi"], Value("string"))).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"split 'test': Invalid string class label kiwi; its labels must be among "
                                         r"the 2 classes the training split names \(\['apple', 'pear'\]\)"):
        load_image_dataset(str(tmp_path / "d"))


def test_class_names_must_agree_between_splits(tmp_path):
    DatasetDict(
        train=image_dict([0], ClassLabel(names=["a", "b"])), test=image_dict([0], ClassLabel(names=["b", "a"]))
    ).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="same ClassLabel"):
        load_image_dataset(str(tmp_path / "d"))


# -- column detection ---------------------------------------------------------------------------------
def test_detection_by_name_then_by_type():
    names = ClassLabel(names=["a", "b"])
    assert detect_columns(image_dict([0], names, "img", "fine_label")) == ("img", "fine_label")
    assert detect_columns(image_dict([0], names, "photo_bytes", "species")) == ("photo_bytes", "species")
    both = image_dict([0], names, extra={"coarse_label": ([1], names)})
    assert detect_columns(both) == ("image", "label")


def test_ambiguous_or_missing_columns_list_the_columns_and_the_argument():
    names = ClassLabel(names=["a", "b"])
    two_images = image_dict([0], names, extra={"img": ([swatch(1)], Image())})
    message = r"columns \['image', 'label', 'img'\].*\['image', 'img'\]\. Pass image_column="
    with pytest.raises(ValueError, match=message):
        detect_columns(two_images)
    assert detect_columns(two_images, image_column="img") == ("img", "label")
    two_labels = image_dict([0], names, extra={"labels": ([1], names)})
    with pytest.raises(ValueError, match=r"\['label', 'labels'\]\. Pass label_column="):
        detect_columns(two_labels)
    no_label = image_dict([0], Value("int64"), label_name="y")
    message = r"columns \['image', 'y'\] and none looks like the label column\. Pass label_column="
    with pytest.raises(ValueError, match=message):
        detect_columns(no_label)
    with pytest.raises(ValueError, match=r"label_column='z' is not a column"):
        detect_columns(no_label, label_column="z")


def test_image_column_must_hold_images(tmp_path):
    train = Dataset.from_dict({"pixel_values": [[0, 1]], "label": [0]})
    DatasetDict(train=train, test=train).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"expected datasets.Image; cast it with dataset.cast_column\('pixel_values'"):
        load_image_dataset(str(tmp_path / "d"))


# -- built-in digits ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("builtin:digits")


def test_builtin_digits_images_and_balanced_split(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.RandomState(0)
    test_rows = []
    for c in range(10):
        rows = np.where(bunch.target == c)[0]
        rng.shuffle(rows)
        test_rows.extend(rows[:30].tolist())
    test_rows = sorted(test_rows)
    train_rows = [r for r in range(len(bunch.target)) if r not in set(test_rows)]
    assert len(digits["train"]) == 1497 and len(digits["test"]) == 300
    assert digits["train"].features["label"].names == [str(c) for c in range(10)]
    assert get_class_counts(digits["test"]) == [30] * 10
    assert digits["test"]["label"][:] == bunch.target[test_rows].tolist()
    assert digits["train"]["label"][:] == bunch.target[train_rows].tolist()
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for position in (0, 7, len(rows) - 1):
            image = digits[split][position]["image"]
            gray = np.round(bunch.images[rows[position]] * 255 / 16).astype(np.uint8)
            expected = np.repeat(np.kron(gray, np.ones((4, 4), dtype=np.uint8))[..., None], 3, axis=2)
            assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)


def test_builtin_digits_long_tail_and_record(digits):
    splits = digits.long_tailed(10)
    source = get_class_counts(digits["train"])
    expected = [int(n * 0.1 ** (c / 9)) for c, n in enumerate(source)]
    assert get_class_counts(splits["train"]) == expected and list(splits.split_info.class_counts) == expected
    assert splits.split_info.source == "builtin:digits" and splits["test"] is digits["test"]
    assert digits.split_info.class_counts == tuple(source) and digits.split_info.long_tail is None


def test_builtin_digits_never_hash_their_arrow_table(monkeypatch):
    """Hashing a whole Arrow table (Dataset.from_dict's fingerprint) pickles pyarrow types with dill, which fails on
    some pyarrow/dill/Python combinations: the demo must build its data, split and transform without it."""
    import datasets.arrow_dataset

    def refuse(*args, **kwargs):
        raise AssertionError("a table was hashed")

    monkeypatch.setattr(datasets.arrow_dataset, "generate_fingerprint", refuse)
    splits = load_image_dataset("builtin:digits")
    lt = make_long_tailed(splits["train"], 20)
    assert len(splits["test"]) == 300 and sum(get_class_counts(lt)) == len(lt) == 505


def test_each_load_of_the_builtin_digits_is_its_own(digits):
    """The encoded images are kept for the process: what one caller does to its datasets reaches no later load (the
    loader itself: load_image_dataset hands out new objects of its own)."""
    from ltkd_hf.data.digits import load_digits_dataset

    first = load_digits_dataset()
    first["train"].set_transform(lambda batch: {"label": [-1] * len(batch["label"])})
    first["test"] = first["test"].cast_column("label", datasets.Value("int64"))
    again = load_digits_dataset()
    assert first["train"][0]["label"] == -1 and again["train"][0]["label"] == digits["train"][0]["label"]
    assert again["test"].features == digits["test"].features
    assert again["train"][:5]["label"] == digits["train"][:5]["label"]
    assert np.array_equal(np.asarray(again["test"][3]["image"]), np.asarray(digits["test"][3]["image"]))


# -- errors for the source itself ---------------------------------------------------------------------
def test_hub_id_offline_fails_with_a_message_naming_the_dataset_and_the_fix():
    assert datasets.config.HF_HUB_OFFLINE  # conftest.py: the real load_dataset path, offline
    with pytest.raises(ConnectionError, match=r"'uoft-cs/cifar100'.*offline.*save_to_disk\('DIR'\).*train/ and test/"):
        load_image_dataset("uoft-cs/cifar100")


def test_missing_path_and_unknown_builtin(tmp_path):
    with pytest.raises(FileNotFoundError, match="looks like a local path but is not a directory"):
        load_image_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"'builtin:mnist' is not a built-in dataset; built-in: \('builtin:digits',\)"):
        load_image_dataset("builtin:mnist")
