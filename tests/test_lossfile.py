"""The student's loss-history file: its parser (grader.worker.lossfile_reader, called
in-process here), the harness's sandboxed read, and the judging (grader.course.lossfile)."""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch

from grader.course.lossfile import (
    FILENAME,
    KEYS,
    LossFileError,
    LossFileRules,
    judge_losses,
    summarise,
)
from grader.worker.lossfile_reader import load_loss_file

BOUNDS = {"rnn_losses": 2.0, "lstm_losses": 1.8, "attn_losses": 0.5}


def curve(bound: float, n: int = 2340, seed: int = 0, start: float = 30.0) -> list[float]:
    """A plausible noisy training curve: ~start at first, settling at ~0.6 * bound."""
    rng = random.Random(seed)
    floor = 0.6 * bound
    out = []
    for i in range(n):
        base = floor + (start - floor) * math.exp(-i / 250)
        out.append(base * (1 + rng.gauss(0, 0.03)))
    return out


def good_data(n: int = 2340) -> dict[str, list[float]]:
    return {key: curve(BOUNDS[key], n=n, seed=i) for i, key in enumerate(KEYS)}


def save(tmp_path: Path, obj: object, name: str = FILENAME) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


# --- good files -----------------------------------------------------------------------------


def test_good_file_loads_and_passes(tmp_path: Path) -> None:
    data = good_data()
    path = save(tmp_path, data)
    loaded = load_loss_file(path)
    assert list(loaded) == list(KEYS)
    for key in KEYS:
        assert len(loaded[key]) == 2340
        assert all(type(v) is float for v in loaded[key])
        assert loaded[key] == pytest.approx(data[key])
        assert loaded[key][-1] < BOUNDS[key]
    assert judge_losses(loaded, LossFileRules()) == []


def test_tensor_values_accepted(tmp_path: Path) -> None:
    data = good_data()
    obj = {
        "rnn_losses": torch.tensor(data["rnn_losses"], dtype=torch.float32),
        "lstm_losses": torch.tensor(data["lstm_losses"], dtype=torch.float64),
        "attn_losses": tuple(data["attn_losses"]),
    }
    loaded = load_loss_file(save(tmp_path, obj))
    assert all(type(v) is float for key in KEYS for v in loaded[key])
    assert loaded["rnn_losses"] == pytest.approx(data["rnn_losses"], rel=1e-6)
    assert judge_losses(loaded, LossFileRules()) == []


def test_integer_values_and_int_tensor_accepted(tmp_path: Path) -> None:
    obj = {"rnn_losses": [9, 1], "lstm_losses": torch.tensor([9, 1]), "attn_losses": [9.0, 0]}
    loaded = load_loss_file(save(tmp_path, obj))
    assert loaded == {
        "rnn_losses": [9.0, 1.0],
        "lstm_losses": [9.0, 1.0],
        "attn_losses": [9.0, 0.0],
    }


def test_requires_grad_tensor_accepted(tmp_path: Path) -> None:
    data = good_data()
    obj = {k: torch.tensor(v, requires_grad=True) for k, v in data.items()}
    loaded = load_loss_file(save(tmp_path, obj))
    assert judge_losses(loaded, LossFileRules()) == []


# --- malformed contents ---------------------------------------------------------------------


def test_wrong_keys(tmp_path: Path) -> None:
    data = good_data(10)
    data["attention_losses"] = data.pop("attn_losses")
    with pytest.raises(LossFileError) as err:
        load_loss_file(save(tmp_path, data))
    msg = str(err.value)
    assert "missing key(s): attn_losses" in msg
    assert "'attention_losses'" in msg


def test_extra_key_rejected(tmp_path: Path) -> None:
    data = good_data(10)
    data["notes"] = [1.0]
    with pytest.raises(LossFileError, match=r"unexpected key.*'notes'"):
        load_loss_file(save(tmp_path, data))


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (["1.0", "0.5"], "str"),
        ([[1.0, 0.5], [0.4]], "list"),
        ([True, False], "bool"),
        ([torch.tensor(1.0), torch.tensor(0.5)], "Tensor"),
        ("1.0, 0.5", "str"),
        ({"a": 1.0}, "dict"),
        (None, "NoneType"),
    ],
)
def test_wrong_value_type(tmp_path: Path, value: object, found: str) -> None:
    data: dict[str, object] = dict(good_data(10))
    data["lstm_losses"] = value
    with pytest.raises(LossFileError) as err:
        load_loss_file(save(tmp_path, data))
    msg = str(err.value)
    assert "lstm_losses" in msg
    assert f"is a {found}" in msg


@pytest.mark.parametrize(
    ("tensor", "needle"),
    [
        (torch.ones(3, 4), "2-D tensor of shape (3, 4)"),
        (torch.tensor(1.5), "0-D tensor"),
        (torch.tensor([True, False]), "torch.bool"),
        (torch.ones(3, dtype=torch.complex64), "torch.complex64"),
    ],
)
def test_wrong_tensor(tmp_path: Path, tensor: torch.Tensor, needle: str) -> None:
    data: dict[str, object] = dict(good_data(10))
    data["attn_losses"] = tensor
    with pytest.raises(LossFileError) as err:
        load_loss_file(save(tmp_path, data))
    assert "attn_losses" in str(err.value)
    assert needle in str(err.value)


@pytest.mark.parametrize("obj", [[1.0, 2.0], (1.0,), torch.ones(3), "losses", 3.0])
def test_top_level_not_a_dict(tmp_path: Path, obj: object) -> None:
    with pytest.raises(LossFileError, match=f"should hold a dict.*{type(obj).__name__}"):
        load_loss_file(save(tmp_path, obj))


def test_numpy_array_rejected_with_hint(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    data: dict[str, object] = dict(good_data(10))
    data["rnn_losses"] = np.asarray(data["rnn_losses"])
    with pytest.raises(LossFileError, match="numpy") as err:
        load_loss_file(save(tmp_path, data))
    assert "tolist" in str(err.value)


# --- broken files ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.99])
@pytest.mark.parametrize("n", [2340, 3])
def test_truncated_file(tmp_path: Path, fraction: float, n: int) -> None:
    path = save(tmp_path, good_data(n))
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(LossFileError, match="truncated or corrupt"):
        load_loss_file(path)


@pytest.mark.parametrize(
    "blob",
    [
        b"rnn_losses = [30.0, 1.0]\nlstm_losses = [30.0, 1.0]\n",
        b"hello world\n",
        bytes(random.Random(1).randrange(256) for _ in range(4000)),
        bytes(random.Random(2).randrange(256) for _ in range(4000)),
        b"\x80\x04",
    ],
)
def test_not_a_torch_file(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(blob)
    with pytest.raises(LossFileError) as err:
        load_loss_file(path)
    msg = str(err.value)
    assert FILENAME in msg
    # Never pass on torch's advice to load with weights_only=False.
    assert "weights_only` set to `False" not in msg
    assert "False" not in msg


def test_plain_pickle_rejected(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(pickle.dumps(good_data(10), protocol=4))
    with pytest.raises(LossFileError, match=r"not a file written by torch\.save"):
        load_loss_file(path)


def test_foreign_zip_rejected(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(LossFileError, match=FILENAME):
        load_loss_file(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"")
    with pytest.raises(LossFileError, match="empty"):
        load_loss_file(path)


def test_oversized_file(tmp_path: Path) -> None:
    path = save(tmp_path, good_data())
    size = path.stat().st_size
    with pytest.raises(LossFileError, match="more than the 1,000 allowed"):
        load_loss_file(path, max_bytes=1000)
    assert load_loss_file(path, max_bytes=size)  # exactly at the limit is fine


def test_oversized_is_checked_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, good_data(10))

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be reached for an oversized file")

    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(LossFileError, match="allowed"):
        load_loss_file(path, max_bytes=10)


def test_deflated_zip_bomb_rejected(tmp_path: Path) -> None:
    """torch reads deflated entries, so a small file may inflate far past max_bytes."""
    plain = save(tmp_path, good_data(10), name="plain.pt")
    path = tmp_path / FILENAME
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
        dst.writestr(f"{src.namelist()[0].split('/')[0]}/padding", b"\0" * 5_000_000)
    assert path.stat().st_size < 100_000
    with pytest.raises(LossFileError, match="unpacks to"):
        load_loss_file(path, max_bytes=1_000_000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LossFileError) as err:
        load_loss_file(tmp_path / FILENAME)
    msg = str(err.value)
    assert "not found" in msg
    assert "saves the losses" in msg


def test_directory_rejected(tmp_path: Path) -> None:
    (tmp_path / FILENAME).mkdir()
    with pytest.raises(LossFileError, match="not a regular file"):
        load_loss_file(tmp_path / FILENAME)


# --- security -------------------------------------------------------------------------------


class _Payload:
    """Pickles as a call to ``func(*args)``: what a malicious submission would contain."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "open": _Payload(open, (str(marker), "w")),
        "os.system": _Payload(os.system, (f"touch '{marker}'",)),
    }


@pytest.mark.parametrize("kind", ["open", "os.system"])
@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_payload_is_not_executed(tmp_path: Path, kind: str, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[kind]
    data: dict[str, object] = dict(good_data(10))
    data["rnn_losses"] = payload
    path = tmp_path / FILENAME
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()

    with pytest.raises(LossFileError) as err:
        load_loss_file(path)

    assert not marker.exists(), "loading the submission executed code from the file"
    msg = str(err.value)
    assert "Python objects other than lists/tensors of numbers (a pickle payload?)" in msg
    assert "False" not in msg


@pytest.mark.parametrize("kind", ["open", "os.system"])
def test_payload_is_live_under_full_pickle(tmp_path: Path, kind: str) -> None:
    """Control: the same payload does run under an unrestricted load, so the test above bites."""
    marker = tmp_path / "control"
    path = save(tmp_path, {"rnn_losses": _payloads(marker)[kind]})
    result = torch.load(path, weights_only=False)
    if kind == "open":
        result["rnn_losses"].close()
    assert marker.exists()


def test_top_level_payload_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = save(tmp_path, _payloads(marker)["open"])
    with pytest.raises(LossFileError, match="pickle payload"):
        load_loss_file(path)
    assert not marker.exists()


# --- judging --------------------------------------------------------------------------------


def test_wrong_length() -> None:
    data = good_data()
    data["lstm_losses"] = data["lstm_losses"][:2000]
    problems = judge_losses(data, LossFileRules())
    assert len(problems) == 1
    assert "lstm_losses" in problems[0]
    assert "expected 2340" in problems[0]
    assert "found 2000" in problems[0]
    assert judge_losses(data, LossFileRules(expected_length=None)) == []


def test_too_short() -> None:
    data = good_data()
    data["rnn_losses"] = [1.0]
    data["attn_losses"] = []
    problems = judge_losses(data, LossFileRules(expected_length=None))
    assert len(problems) == 2
    assert "rnn_losses" in problems[0] and "only 1 value" in problems[0]
    assert "attn_losses" in problems[1] and "only 0 value" in problems[1]


def test_non_finite_values() -> None:
    data = good_data()
    data["rnn_losses"][100] = float("nan")
    data["rnn_losses"][200] = float("inf")
    data["attn_losses"][-1] = float("-inf")
    problems = judge_losses(data, LossFileRules())
    assert len(problems) == 2
    assert "rnn_losses" in problems[0]
    assert "2 non-finite" in problems[0]
    assert "first at index 100" in problems[0]
    assert "attn_losses" in problems[1]
    assert "1 non-finite" in problems[1]
    assert "index 2339" in problems[1]


def test_non_finite_survives_loading(tmp_path: Path) -> None:
    data = good_data()
    data["lstm_losses"][5] = float("nan")
    loaded = load_loss_file(save(tmp_path, data))
    assert math.isnan(loaded["lstm_losses"][5])
    assert any(
        "lstm_losses" in p and "non-finite" in p for p in judge_losses(loaded, LossFileRules())
    )


def test_final_above_bound() -> None:
    data = good_data()
    data["attn_losses"] = curve(1.2, seed=7)  # settles at ~0.72, above the 0.5 bound
    problems = judge_losses(data, LossFileRules())
    assert len(problems) == 1
    msg = problems[0]
    assert "attn_losses" in msg and "attention" in msg
    assert f"{data['attn_losses'][-1]:.4g}" in msg
    assert "not below 0.5" in msg


def test_final_equal_to_bound_fails() -> None:
    data = good_data()
    data["rnn_losses"][-1] = 2.0
    problems = judge_losses(data, LossFileRules())
    assert problems == ["rnn_losses (RNN): final loss 2 is not below 2"]


def test_tail_averages_last_values() -> None:
    data = good_data()
    data["lstm_losses"][-3:] = [2.5, 2.5, 0.4]  # last value fine, mean of last 3 = 1.8
    assert judge_losses(data, LossFileRules()) == []
    problems = judge_losses(data, LossFileRules(tail=3))
    assert len(problems) == 1
    assert "lstm_losses" in problems[0] and "mean of last 3" in problems[0]
    assert "not below 1.8" in problems[0]


def test_curve_not_decreasing() -> None:
    data = good_data()
    flat = [0.3 + 0.01 * (i % 5) for i in range(2340)]  # below the bound, but never learned
    data["attn_losses"] = flat
    problems = judge_losses(data, LossFileRules())
    assert len(problems) == 1
    msg = problems[0]
    assert "attn_losses" in msg and "did not decrease" in msg
    assert f"{flat[-1]:.4g}" in msg and f"first loss {flat[0]:.4g}" in msg


def test_rising_curve_reports_bound_and_drop() -> None:
    data = good_data()
    data["rnn_losses"] = [1.0 + i / 1000 for i in range(2340)]
    problems = judge_losses(data, LossFileRules())
    assert len(problems) == 2
    assert all("rnn_losses (RNN)" in p for p in problems)


def test_missing_key_in_judge() -> None:
    data = good_data()
    del data["lstm_losses"]
    assert judge_losses(data, LossFileRules()) == ["lstm_losses (LSTM): missing"]


def test_summarise() -> None:
    data = {"rnn_losses": [30.0, float("nan"), 1.0, 1.5], "lstm_losses": [], "attn_losses": [2.0]}
    s = summarise(data)
    assert s["rnn_losses"] == {"length": 4, "first": 30.0, "final": 1.5, "min": 1.0}
    assert s["lstm_losses"] == {"length": 0, "first": None, "final": None, "min": None}
    assert s["attn_losses"] == {"length": 1, "first": 2.0, "final": 2.0, "min": 2.0}


# --- rules ----------------------------------------------------------------------------------


def test_rules_defaults() -> None:
    rules = LossFileRules()
    assert rules.expected_length == 2340
    assert rules.final_bounds == BOUNDS
    assert rules.max_bytes == 20_000_000
    assert rules.tail == 1
    assert rules.min_drop == 0.5
    assert LossFileRules().final_bounds is not rules.final_bounds  # no shared mutable default


def test_rules_from_mapping() -> None:
    rules = LossFileRules.from_mapping(
        {"expected_length": 390, "tail": 5, "min_drop": 0.3, "final_bounds": {"attn_losses": 0.8}}
    )
    assert rules.expected_length == 390
    assert rules.tail == 5
    assert rules.min_drop == 0.3
    assert rules.max_bytes == 20_000_000
    # Partial bounds are merged over the defaults, not replacing them.
    assert rules.final_bounds == {"rnn_losses": 2.0, "lstm_losses": 1.8, "attn_losses": 0.8}
    assert LossFileRules.from_mapping({}) == LossFileRules()


def test_rules_from_mapping_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"unknown.*expected_lenght") as err:
        LossFileRules.from_mapping({"expected_lenght": 2340, "tail": 2})
    assert "tail" not in str(err.value).split("(known")[0]


@pytest.mark.parametrize(
    "bad",
    [
        {"final_bounds": {"gru_losses": 1.0}},
        {"final_bounds": {"rnn_losses": "2"}},
        {"final_bounds": [2.0]},
        {"tail": 0},
        {"min_drop": 0},
        {"min_drop": 1.5},
        {"expected_length": 1},
        {"expected_length": True},
        {"max_bytes": -1},
    ],
)
def test_rules_invalid_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LossFileRules.from_mapping(bad)


# -- the harness reads the file through a worker that imports no student code --------------


@pytest.mark.slow
def test_harness_reads_loss_files_in_a_worker(tmp_path):
    """Good numbers come back as plain floats; a pickle payload fails as the file's fault."""
    from grader.harness.client import read_loss_file

    good = tmp_path / FILENAME
    torch.save(good_data(5), good)
    assert read_loss_file(good, 10_000_000) == {k: [float(x) for x in v]
                                                 for k, v in good_data(5).items()}
    evil = tmp_path / "evil" / FILENAME
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps({"rnn_losses": os.system}))
    with pytest.raises(LossFileError, match=r"not a file written by torch\.save|rejected"):
        read_loss_file(evil, 10_000_000)
    fifo = tmp_path / "fifo" / FILENAME
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(LossFileError, match="not a regular file"):
        read_loss_file(fifo, 10_000_000)  # refused before any copy or parse (would block)


@pytest.mark.slow
def test_the_same_bytes_are_parsed_once_per_grading_process(tmp_path, monkeypatch):
    """Two checks reading one hand-in start one worker; other bytes start another."""
    from grader.harness import client
    from grader.harness.workers import WorkerSupply

    supply = WorkerSupply()  # one grading's: its parsed files are its own
    started = []
    launch = client._Worker.launch
    monkeypatch.setattr(client._Worker, "launch",
                        classmethod(lambda cls, *a: started.append(1) or launch(*a)))
    path = tmp_path / FILENAME
    torch.save(good_data(5), path)
    first = client.read_loss_file(path, 10_000_000, supply=supply)
    first["rnn_losses"].append(-1.0)  # a caller's change never reaches the next caller
    assert client.read_loss_file(path, 10_000_000, supply=supply) == {
        k: [float(x) for x in v] for k, v in good_data(5).items()}
    assert len(started) == 1
    torch.save(good_data(6), path)
    assert len(client.read_loss_file(path, 10_000_000, supply=supply)["rnn_losses"]) == 6
    assert len(started) == 2
    path.write_bytes(b"not a torch file")
    for _ in range(2):  # the file's own fault: the same message, one parse
        with pytest.raises(LossFileError):
            client.read_loss_file(path, 10_000_000, supply=supply)
    assert len(started) == 3
