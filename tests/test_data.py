"""The synthetic dataset, loading and validating coco.pt files, and the data cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grader.course import dataset, synthetic
from grader.course.dataset import DataError
from grader.course.training import decode_captions


@pytest.fixture(scope="module")
def small():
    return synthetic.make_dataset(n_train=60, n_val=12, seed=3)


def test_synthetic_has_the_course_format(small):
    assert set(small) == {"train_images", "train_captions", "val_images", "val_captions",
                          "vocab"}
    assert small["train_images"].shape == (60, 3, 112, 112)
    assert small["train_images"].dtype == torch.uint8
    assert small["val_captions"].shape == (12, 17) and small["val_captions"].dtype == torch.int64
    idx_to_token = small["vocab"]["idx_to_token"]
    assert idx_to_token[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert small["vocab"]["token_to_idx"] == {w: i for i, w in enumerate(idx_to_token)}
    assert dataset.validate(small) is small
    for caption in small["train_captions"].tolist():
        end = caption.index(2)
        assert caption[0] == 1 and 4 <= end <= 16
        assert all(t >= 4 for t in caption[1:end]) and all(t == 0 for t in caption[end + 1:])


def test_synthetic_is_deterministic_from_its_seed(small):
    again = synthetic.make_dataset(n_train=60, n_val=12, seed=3)
    other = synthetic.make_dataset(n_train=60, n_val=12, seed=4)
    for key in ("train_images", "train_captions", "val_images", "val_captions"):
        assert torch.equal(small[key], again[key])
    assert not torch.equal(small["train_images"], other["train_images"])
    assert not torch.equal(small["train_captions"], other["train_captions"])


def test_captions_describe_what_is_drawn():
    scene = [{"colour": "red", "shape": "circle", "size": "large", "r": 20.0, "x": 28.0,
              "y": 28.0}]
    assert " ".join(synthetic.describe(scene)) == "a large red circle in the top left corner"
    image = synthetic._render([scene], np.random.default_rng(0))[0].astype(int)
    red, green, blue = image[:, 28, 28]
    assert red > 180 and green < 90 and blue < 90  # the shape's centre is red
    assert image[0, 10, 10] < 110  # the bounding box corner is background: a circle
    pair = [scene[0], {"colour": "blue", "shape": "square", "size": "small", "r": 10.0,
                       "x": 90.0, "y": 32.0}]
    assert " ".join(synthetic.describe(pair)) == \
        "a large red circle to the left of a small blue square"
    pair[1].update(x=30.0, y=90.0)
    assert " ".join(synthetic.describe(pair)).startswith("a large red circle above")
    three = [dict(pair[1], x=80.0), pair[0], dict(pair[1], colour="green", x=55.0)]
    assert " ".join(synthetic.describe(three)) == ("a red circle a green square and a blue "
                                                   "square from left to right")


def test_every_caption_fits_and_uses_known_words():
    data = synthetic.make_dataset(n_train=300, n_val=0, seed=11)
    words = decode_captions(data["train_captions"], data["vocab"]["idx_to_token"])
    assert len(words) == 300
    counts = {len(w.split()) - 2 for w in words}  # without <START> and <END>
    assert max(counts) <= 15 and min(counts) >= 5
    assert "<UNK>" not in " ".join(words)
    named = [synthetic.objects_named(w.split()) for w in words]
    assert {len(n) for n in named} == {1, 2, 3}  # one to three shapes per image


def test_validate_names_each_problem(small):
    def broken(**changes):
        data = {**small, "vocab": dict(small["vocab"])}
        data.update(changes)
        return data

    cases = [
        ({k: v for k, v in small.items() if k != "val_captions"}, "missing keys"),
        (broken(train_images=small["train_images"].float()), "uint8"),
        (broken(train_images=small["train_images"][:, :, :64]), "(N, 3, 112, 112)"),
        (broken(val_captions=small["val_captions"].int()), "int64"),
        (broken(train_captions=small["train_captions"][:10]), "to match"),
        (broken(vocab={"idx_to_token": ["<NULL>"], "token_to_idx": {}}), "inconsistent vocab"),
        (broken(vocab={"idx_to_token": ["<START>", "<NULL>", "<END>", "<UNK>"],
                       "token_to_idx": {"<START>": 0, "<NULL>": 1, "<END>": 2, "<UNK>": 3}}),
         "<NULL> at index 0"),
        (broken(train_captions=small["train_captions"] + 100), "outside the vocabulary"),
        ([1, 2, 3], "expected a dict"),
    ]
    for data, words in cases:
        with pytest.raises(DataError, match=None) as info:
            dataset.validate(data, "coco.pt")
        assert words in str(info.value) and "coco.pt" in str(info.value)


def test_load_coco_good_truncated_missing_and_malicious(small, tmp_path):
    good = tmp_path / "coco.pt"
    torch.save(small, good)
    loaded = dataset.load_coco(good)
    assert torch.equal(loaded["val_images"], small["val_images"])

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated"):
        dataset.load_coco(truncated)
    with pytest.raises(DataError, match="no such file"):
        dataset.load_coco(tmp_path / "absent.pt")

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({**small, "vocab": Payload()}, evil)
    with pytest.raises(DataError, match="Python objects"):
        dataset.load_coco(evil)
    assert not marker.exists()


def test_load_data_prefers_the_course_file(small, tmp_path, monkeypatch, capsys):
    good = tmp_path / "coco.pt"
    torch.save(small, good)
    monkeypatch.setenv(dataset.COCO_ENV, str(good))
    data = dataset.load_data()
    assert len(data["train_images"]) == 60
    assert "course data from" in capsys.readouterr().out
    monkeypatch.setenv(dataset.COCO_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(DataError, match="no such file"):
        dataset.load_data()


def test_synthetic_cache_is_reused_and_repaired(tmp_path, monkeypatch):
    monkeypatch.setenv(dataset.CACHE_ENV, str(tmp_path))
    first = dataset.load_synthetic(n_train=20, n_val=4, seed=5)
    path = dataset.synthetic_path(20, 4, 5)
    assert path.is_file() and path.parent == tmp_path
    stamp = path.stat().st_mtime_ns
    second = dataset.load_synthetic(n_train=20, n_val=4, seed=5)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    assert torch.equal(first["train_images"], second["train_images"])
    path.write_bytes(b"garbage")
    third = dataset.load_synthetic(n_train=20, n_val=4, seed=5)
    assert torch.equal(first["train_captions"], third["train_captions"])
    assert dataset.validate(torch.load(path, weights_only=True))
