"""Inputs that lie about themselves are refused in one line before they are trusted."""
import hashlib
import json
import pathlib

import numpy as np
import pytest

from data_prep import build_tfrecords, loaders
from data_prep.writer import GzipRecordWriter, _entry, _field, write_dataset
from tfsacnn.data import parse_neurons, records
from tfsacnn.errors import ConfigError, DataError


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _build(tmp_path, responses, *extra, images=None):
    """build_tfrecords on 6 random 8x8 images; returns (exit code, dataset dir)."""
    img = tmp_path / "img.npy"
    np.save(img, np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
            if images is None else images)
    rsp = responses if isinstance(responses, pathlib.Path) else tmp_path / "rsp.npy"
    if not isinstance(responses, pathlib.Path):
        np.save(rsp, responses)
    out = tmp_path / "ds"
    try:
        code = build_tfrecords.main(["--out", str(out), "--images", str(img), "--responses",
                                     str(rsp), "--val-fraction", "0.34", "--quiet", *extra])
    except SystemExit as e:
        code = e.code
    return code, out


# ------------------------------------------------------------------------ .npy headers
def _lying_npy(path, shape, dtype="<f4", data=b"\0" * 48):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(data)


@pytest.mark.parametrize("shape", [(10 ** 9, 10 ** 6), (5, 3)])
def test_npy_header_must_match_the_file_size(tmp_path, capsys, shape):
    path = tmp_path / "rsp.npy"
    _lying_npy(path, shape)                         # 48 bytes of data = 12 float32
    with pytest.raises(DataError, match=r"header says shape .* but the file holds 48 bytes"):
        loaders.load_responses(path)
    code, out = _build(tmp_path, path)
    assert code == 2 and not out.exists()
    line = _one_error_line(capsys)
    assert str(path) in line and f"shape {shape}" in line
    _lying_npy(path, (4, 3))                        # the truth is still read
    assert loaders.load_responses(path).values.shape == (4, 3)


# --------------------------------------------------------------------- response values
@pytest.mark.parametrize("policy", ["error", "zero", "drop-images"])
def test_finite_responses_beyond_float32_are_refused_under_every_policy(tmp_path, capsys,
                                                                        policy):
    rsp = np.random.default_rng(1).random((6, 2))
    rsp[3, 1] = 1e300
    code, out = _build(tmp_path, rsp, "--nan-policy", policy)
    assert code == 2 and not out.exists()
    line = _one_error_line(capsys)
    assert "beyond float32's range" in line and "1e+300" in line and "(3, 1)" in line
    assert "nan" not in line.lower().replace("--nan-policy", "")


def test_table_and_image_values_beyond_float32_are_refused(tmp_path):
    table = tmp_path / "rsp.csv"
    table.write_text("a,b\n1,2\n-3e39,4\n")
    with pytest.raises(DataError, match=r"rsp.csv: responses hold 1 finite values beyond"):
        loaders.load_responses(table)
    images = np.random.default_rng(0).random((6, 8, 8))
    images[2, 3, 3] = 1e40
    np.save(tmp_path / "img.npy", images)
    with pytest.raises(DataError, match=r"img.npy: images hold 1 finite values beyond"):
        loaders.load_images(tmp_path / "img.npy", lambda x, name: x)


def test_complex_responses_are_refused(tmp_path, capsys):
    import scipy.io

    rsp = np.random.default_rng(1).random((6, 2)) + 0.5j
    code, out = _build(tmp_path, rsp)
    assert code == 2 and not out.exists()
    assert "responses are complex (complex128)" in _one_error_line(capsys)
    scipy.io.savemat(tmp_path / "rsp.mat", {"r": rsp})
    with pytest.raises(DataError, match="rsp.mat: responses are complex"):
        loaders.load_responses(tmp_path / "rsp.mat", mat_variable="r")


# ---------------------------------------------------------------------- image names
def test_image_names_differing_only_in_case_have_a_total_order(tmp_path, monkeypatch):
    from PIL import Image

    names = ["b.png", "A.png", "img10.png", "a.png", "img2.png", "B.png", "IMG2.png"]
    for i, name in enumerate(names):
        Image.fromarray(np.full((4, 4), i * 30, np.uint8)).save(tmp_path / name)
    want = ["A.png", "a.png", "B.png", "b.png", "IMG2.png", "img2.png", "img10.png"]
    listed = pathlib.Path.rglob
    for order in (sorted, lambda xs: sorted(xs, reverse=True)):   # whatever the file system says
        monkeypatch.setattr(pathlib.Path, "rglob",
                            lambda self, pat, order=order: iter(order(listed(self, pat))))
        got = loaders.load_images(tmp_path, lambda x, name: x)
        assert got.ids == want
        np.testing.assert_array_equal(got.array[:, 0, 0], [names.index(n) * 30 for n in want])


# ---------------------------------------------------------------------- neuron indices
@pytest.mark.parametrize("spec,message", [
    ([1.5, 2], "1.5 is not an integer index"), ([1.0], "1.0 is not an integer index"),
    ([True], "True is not an integer index"), ("", "'' selects no neurons"),
    ("  ", "selects no neurons"), ("1.5", "bad index '1.5'")])
def test_neuron_indices_must_be_integers(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_neurons(spec, 5)
    assert parse_neurons([np.int64(1), 3], 5) == [1, 3]


# --------------------------------------------------------------- datasets that lie
@pytest.fixture
def tiny(tmp_path):
    """A valid 50x50 dataset: 4 train and 4 val images, 2 neurons."""
    rng = np.random.default_rng(0)
    splits = {s: {"images": rng.random((4, 50, 50)).astype(np.float32),
                  "responses": rng.random((4, 2)).astype(np.float32)} for s in ("train", "val")}
    return write_dataset(tmp_path / "ds", splits, progress=False)


def _retype_train_shard(ds):
    """Rewrite the train shard with `response` as a bytes_list (checksums kept valid)."""
    manifest = json.loads((ds / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    with GzipRecordWriter(ds / shard["file"]) as w:
        for _ in range(shard["count"]):
            feats = _entry(b"image", _field(1, _field(1, np.zeros((50, 50), "<f4").tobytes())))
            feats += _entry(b"response", _field(1, _field(1, np.zeros(2, "<f4").tobytes())))
            w.write(_field(1, feats))
    shard["sha256"] = hashlib.sha256((ds / shard["file"]).read_bytes()).hexdigest()
    (ds / "manifest.json").write_text(json.dumps(manifest))
    return ds / shard["file"]


def _fit(ds, out, *extra):
    from tfsacnn.cli.main import main

    return main(["fit", "--config", "ff_cnn", "--data", str(ds), "--out", str(out),
                 "--set", "train.epochs=1", "--set", "eval.top_k=1", "--quiet", *extra])


def test_shard_features_of_the_wrong_kind_are_one_line(tiny, tmp_path, capsys):
    shard = _retype_train_shard(tiny)
    with pytest.raises(DataError, match=r"record 0: 'response' is a bytes_list, expected a "
                                        r"float_list"):
        records.load_numpy(tiny, "train")
    with pytest.raises(DataError, match=f"{shard}: record 0: 'response' is a bytes_list"):
        records.check_first_records([shard], 50, 2)
    assert _fit(tiny, tmp_path / "run") == 2
    assert "'response' is a bytes_list" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_an_empty_train_split_is_refused(tiny, tmp_path, capsys):
    manifest = json.loads((tiny / "manifest.json").read_text())
    manifest["splits"]["train"].update(count=0, shards=[])
    (tiny / "manifest.json").write_text(json.dumps(manifest))
    assert _fit(tiny, tmp_path / "run") == 2
    assert _one_error_line(capsys) == (f"error: {tiny}: the train split has no images; "
                                       f"nothing to train on")
    assert not (tmp_path / "run").exists()


def test_an_empty_neurons_flag_is_refused(tiny, tmp_path, capsys):
    assert _fit(tiny, tmp_path / "run", "--neurons", "") == 2
    assert "selects no neurons" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()
