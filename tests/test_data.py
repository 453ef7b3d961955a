"""Data pipeline: build_tfrecords CLI -> shards + manifest -> tfsacnn.data reader."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.io
from helpers_data import decode_gray, expected_image, make_image_dir, read_index, standardize

from data_prep.build_tfrecords import main
from data_prep.writer import write_dataset
from tfsacnn import data
from tfsacnn.errors import ConfigError, DataError


def build(*argv):
    main([str(a) for a in argv])


def no_leftovers(out):
    """OUT does not exist and no OUT.tmp-* directory was left beside it."""
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(out.name + ".tmp-")]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, make_image_dir(root / "imgs", n=40, shape=(30, 36))


@pytest.fixture
def tiny(tmp_path):
    """Small .npy inputs: 12 images 8x8 (uint8), 3 neurons."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "img.npy", rng.integers(0, 256, (12, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "rsp.npy", rng.random((12, 3), dtype=np.float32))
    return tmp_path


# --------------------------------------------------------------------------- round trips
def test_image_directory_round_trip(image_dir, tmp_path):
    root, rel = image_dir
    rsp = np.random.default_rng(2).random((40, 3), dtype=np.float32)
    np.save(tmp_path / "rsp.npy", rsp)
    out = tmp_path / "ds"
    build("--out", out, "--images", root / "imgs", "--responses", tmp_path / "rsp.npy", "--size", 20,
          "--crop", 28, "--val-fraction", 0.2, "--test-fraction", 0.1, "--shard-size", 7)
    m = data.read_manifest(out)
    assert m["image_size"] == 20 and m["n_neurons"] == 3
    assert m["normalization"]["method"] == "standardize" and m["normalization"]["computed_on"] == "train"
    index = read_index(out)
    assert sorted(sum(index.values(), [])) == sorted(rel)          # every image exactly once
    raw = {k: np.stack([expected_image(decode_gray(root / "imgs" / r), 20, crop=28) for r in ids])
           for k, ids in index.items()}
    want = standardize(raw)
    for split, ids in index.items():
        images, responses = data.load_numpy(out, split)
        assert images.shape == (len(ids), 20, 20, 1) and m["splits"][split]["count"] == len(ids)
        np.testing.assert_allclose(images[..., 0], want[split], atol=2e-4)
        np.testing.assert_array_equal(responses, rsp[[rel.index(r) for r in ids]])


def test_csv_ids_unit_and_val_repeats(image_dir, tmp_path):
    root, rel = image_dir
    rng = np.random.default_rng(3)
    order = rng.permutation(40)
    rsp = rng.random((40, 2), dtype=np.float32)
    stems = [r.rsplit(".", 1)[0] for r in rel]                       # ids: relative path without extension
    pd.DataFrame({"image": [stems[i] for i in order], "cell_a": rsp[order, 0], "cell_b": rsp[order, 1]}) \
        .to_csv(tmp_path / "rsp.csv", index=False)
    val_img = rng.integers(0, 256, (6, 36, 36), dtype=np.uint8)
    reps = rng.random((6, 4, 2), dtype=np.float32)
    reps[0, 1, 0] = np.nan                                           # a missing trial
    np.save(tmp_path / "vimg.npy", val_img)
    np.save(tmp_path / "vrsp.npy", reps)
    out = tmp_path / "ds"
    build("--out", out, "--images", root / "imgs", "--responses", tmp_path / "rsp.csv", "--id-column", "image",
          "--val-images", tmp_path / "vimg.npy", "--val-responses", tmp_path / "vrsp.npy",
          "--normalize", "unit", "--size", 12)
    m = data.read_manifest(out)
    assert m["neuron_ids"] == ["cell_a", "cell_b"] and m["splits"]["val"]["n_repeats"] == 4
    assert m["noise_ceiling"]["method"] == "split_half_spearman_brown"
    images, responses = data.load_numpy(out, "train")
    ids = read_index(out)["train"]
    assert ids == [stems[i] + rel[i][len(stems[i]):] for i in order]  # table order
    np.testing.assert_array_equal(responses, rsp[order])
    want = np.stack([expected_image(decode_gray(root / "imgs" / r), 12) for r in ids])
    np.testing.assert_allclose(images[..., 0], want, atol=1e-5)
    v_images, v_rsp, v_reps = data.load_numpy(out, "val", with_repeats=True)
    np.testing.assert_array_equal(v_reps, reps)                      # NaN kept in place
    np.testing.assert_allclose(v_rsp, np.nanmean(reps, axis=1), rtol=1e-6)
    want = np.stack([expected_image(im.astype(np.float32), 12) for im in val_img])
    np.testing.assert_allclose(v_images[..., 0], want, atol=1e-5)


def test_sacnn_layout(tmp_path):
    rng = np.random.default_rng(4)
    site = tmp_path / "raw"
    site.mkdir()
    train_img = rng.random((20, 50, 50)).astype(np.float32) * 255
    val_img = rng.random((6, 50, 50)).astype(np.float32) * 255
    train_rsp = rng.random((20, 5)).astype(np.float32)
    val_rsp = rng.random((3, 6, 5)).astype(np.float32)               # (R, N, n) order
    for name, arr in [("train_img", train_img), ("trainRsp", train_rsp), ("val_img", val_img), ("valRsp", val_rsp)]:
        np.save(site / f"{name}_m1s1.npy", arr)
    out = tmp_path / "ds"
    build("--out", out, "--sacnn-dir", site, "--site", "m1s1", "--normalize", "unit", "--test-fraction", 0.5)
    m = data.read_manifest(out)
    assert set(m["splits"]) == {"train", "val", "test"} and m["image_size"] == 50
    assert m["splits"]["val"]["count"] == 3 and m["splits"]["test"]["n_repeats"] == 3
    images, responses = data.load_numpy(out, "train")
    np.testing.assert_allclose(images[..., 0], train_img / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(responses, train_rsp)
    index = read_index(out)
    for split in ("val", "test"):
        idx = [int(i) for i in index[split]]
        _, rsp, reps = data.load_numpy(out, split, with_repeats=True)
        np.testing.assert_array_equal(reps, val_rsp.transpose(1, 0, 2)[idx])
        np.testing.assert_allclose(rsp, val_rsp.mean(0)[idx], rtol=1e-6)
    assert sorted(int(i) for i in index["val"] + index["test"]) == list(range(6))


def test_mat_parquet_list_and_fraction_crop(tmp_path, image_dir):
    root, rel = image_dir
    rng = np.random.default_rng(5)
    (tmp_path / "list.txt").write_text("".join(f"{root / 'imgs' / r}\n" for r in rel[:10]))  # absolute paths
    rsp = rng.random((10, 2))
    scipy.io.savemat(tmp_path / "rsp.mat", {"R": rsp})
    pd.DataFrame(rsp[:, :1], columns=["n0"]).to_parquet(tmp_path / "v.parquet")
    out = tmp_path / "ds"
    build("--out", out, "--images", tmp_path / "list.txt", "--responses", tmp_path / "rsp.mat",
          "--mat-variable", "R", "--crop", 0.5, "--size", 10, "--normalize", "unit", "--val-fraction", 0.3)
    images, responses = data.load_numpy(out, "train")
    ids = read_index(out)["train"]
    want = np.stack([expected_image(decode_gray(root / i), 10, crop=0.5) for i in ids])
    np.testing.assert_allclose(images[..., 0], want, atol=1e-5)
    np.testing.assert_allclose(responses, rsp[[rel.index(os.path.relpath(i, root / "imgs")) for i in ids]], rtol=1e-6)
    from data_prep.loaders import load_responses
    assert load_responses(tmp_path / "v.parquet").neuron_ids == ["n0"]


def test_splits_disjoint_and_deterministic(tiny):
    args = ["--images", tiny / "img.npy", "--responses", tiny / "rsp.npy", "--val-fraction", 0.25,
            "--test-fraction", 0.25, "--size", 8]
    build("--out", tiny / "a", *args, "--seed", 7)
    build("--out", tiny / "b", *args, "--seed", 7)
    build("--out", tiny / "c", *args, "--seed", 8)
    a, b, c = (read_index(tiny / x) for x in "abc")
    assert a == b and a != c
    flat = [int(i) for s in ("train", "val", "test") for i in a[s]]
    assert sorted(flat) == list(range(12)) and len(a["val"]) == 3 and len(a["test"]) == 3


def test_nan_policies(tiny):
    rsp = np.load(tiny / "rsp.npy")
    rsp[[2, 5], 1] = np.nan
    rsp[7, 0] = np.inf
    np.save(tiny / "nan.npy", rsp)
    common = ["--images", tiny / "img.npy", "--responses", tiny / "nan.npy", "--size", 8, "--val-fraction", 0]
    build("--out", tiny / "drop", *common, "--nan-policy", "drop-images")
    _, r = data.load_numpy(tiny / "drop", "train")
    np.testing.assert_array_equal(r, np.delete(rsp, [2, 5, 7], axis=0))
    build("--out", tiny / "zero", *common, "--nan-policy", "zero")
    _, r = data.load_numpy(tiny / "zero", "train")
    np.testing.assert_array_equal(r, np.where(np.isfinite(rsp), rsp, 0))


# --------------------------------------------------------------------------- reader
@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    """10 examples in 1 shard and in 4 shards; response[:, 0] = example index."""
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(6)
    images = rng.random((10, 4, 4), dtype=np.float32)
    rsp = rng.random((10, 5), dtype=np.float32)
    rsp[:, 0] = np.arange(10)
    reps = rng.random((10, 2, 5), dtype=np.float32)
    split = {"images": images, "responses": rsp, "repeats": reps}
    write_dataset(root / "one", {"train": split}, shard_size=100, progress=False)
    write_dataset(root / "four", {"train": split}, shard_size=3, progress=False)
    return root, images, rsp, reps


def test_load_shapes_and_neuron_subset(small_ds):
    root, images, rsp, reps = small_ds
    x, y = next(iter(data.load(root / "four", "train", 4, neurons="3,0")))
    assert x.shape == (4, 4, 4, 1) and x.dtype.name == "float32" and y.shape == (4, 2)
    np.testing.assert_array_equal(y.numpy(), rsp[:4][:, [3, 0]])
    _, r, rp = data.load_numpy(root / "one", "train", neurons="1:3", with_repeats=True)
    np.testing.assert_array_equal(r, rsp[:, 1:3])
    np.testing.assert_array_equal(rp, reps[:, :, 1:3])
    ds = data.load(root / "one", "train", 3, shuffle=True, seed=1, repeat=True, drop_remainder=True)
    seen = np.concatenate([b[1][:, 0].numpy() for b in ds.take(10)])
    assert len(seen) == 30 and set(seen.astype(int)) == set(range(10))


def test_parse_neurons():
    assert data.parse_neurons("0:3", 10) == [0, 1, 2]
    assert data.parse_neurons("1,5,7", 10) == [1, 5, 7]
    assert data.parse_neurons("0:2,8:", 10) == [0, 1, 8, 9]
    assert data.parse_neurons([4, 2], 10) == [4, 2] and data.parse_neurons(None, 3) == [0, 1, 2]
    assert data.parse_neurons("0:10", 10) == list(range(10))
    for bad in ("10", "a", "1,1", "5:2", []):
        with pytest.raises(ConfigError):
            data.parse_neurons(bad, 10)
    for bad in ("0:11", "-3:", "2:-1"):      # not clamped to the site, nor counted from its end
        with pytest.raises(ConfigError, match=f"range '{bad}' is out of range for 10 neurons"):
            data.parse_neurons(bad, 10)


@pytest.mark.parametrize("name", ["one", "four"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_input_context_sharding(small_ds, name, shuffle):
    import tensorflow as tf
    root = small_ds[0]
    parts, batches = [], []
    for pipe in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipe, num_replicas_in_sync=2)
        ds = data.load(root / name, "train", 2, shuffle=shuffle, seed=3, input_context=ctx)
        batches.append([b[1][:, 0].numpy().astype(int).tolist() for b in ds])
        parts.append({v for b in batches[-1] for v in b})
    if name == "one":
        # by example: each pipeline keeps its slice of the same global batches of 2 x 2, so
        # global batch k is exactly a single device's batch k of 4 (the partial one dropped)
        single = [b[1][:, 0].numpy().astype(int).tolist()
                  for b in data.load(root / name, "train", 4, shuffle=shuffle, seed=3)]
        assert [a + b for a, b in zip(*batches)] == single[:2]
        assert len(parts[0]) == len(parts[1]) == 4
        assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 8
    else:
        assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(10))  # by file
    opts = data.load(root / name, "train", 2).options()
    assert opts.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


# --------------------------------------------------------------------------- bad inputs (CLI)
def cli_error(capsys, out, *argv):
    """Run the CLI expecting failure; return its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        build("--out", out, *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    no_leftovers(out)
    return err[0]


def _bad_nan(t):
    r = np.load(t / "rsp.npy")
    r[3, 1] = np.nan
    np.save(t / "bad.npy", r)
    return ["--images", t / "img.npy", "--responses", t / "bad.npy"], "bad.npy: 1 NaN/inf responses"


def _bad_inf(t):
    r = np.load(t / "rsp.npy")
    r[0, 0] = -np.inf
    np.save(t / "bad.npy", r)
    return ["--images", t / "img.npy", "--responses", t / "bad.npy"], "bad.npy: 1 NaN/inf"


def _bad_count(t):
    np.save(t / "bad.npy", np.zeros((11, 3), np.float32))
    return ["--images", t / "img.npy", "--responses", t / "bad.npy"], "bad.npy: 11 response rows but 12 images"


def _bad_corrupt_image(t):
    (t / "d" / "sub").mkdir(parents=True)
    from PIL import Image
    for i in range(3):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(t / "d" / f"{i}.png")
    (t / "d" / "sub" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    np.save(t / "r.npy", np.zeros((4, 3), np.float32))
    return ["--images", t / "d", "--responses", t / "r.npy"], "x.png: unreadable or corrupt image"


def _bad_truncated_image(t):
    from PIL import Image
    (t / "d").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(t / "d" / "a.jpg")
    (t / "d" / "a.jpg").write_bytes((t / "d" / "a.jpg").read_bytes()[:200])
    np.save(t / "r.npy", np.zeros((1, 3), np.float32))
    return ["--images", t / "d", "--responses", t / "r.npy"], "a.jpg: unreadable or corrupt image"


def _bad_empty_dir(t):
    (t / "empty" / "sub").mkdir(parents=True)
    (t / "empty" / "notes.txt").write_text("no images here")
    return ["--images", t / "empty", "--responses", t / "rsp.npy"], "empty: no image files found"


def _bad_mixed_sizes(t):
    from PIL import Image
    (t / "d").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(t / "d" / "1.png")
    Image.fromarray(np.arange(72, dtype=np.uint8).reshape(9, 8)).save(t / "d" / "2.png")
    np.save(t / "r.npy", np.zeros((2, 3), np.float32))
    return ["--images", t / "d", "--responses", t / "r.npy"], "2.png: image size 9x8 differs"


def _bad_csv(t):
    (t / "r.csv").write_text("a,b\n" + "1,2\n" * 5 + "1,oops\n" + "1,2\n" * 6)
    return ["--images", t / "img.npy", "--responses", t / "r.csv"], "r.csv: non-numeric value 'oops' in column 'b', row 6"


def _bad_pickle(t):
    np.save(t / "obj.npy", np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    return ["--images", t / "img.npy", "--responses", t / "obj.npy"], "obj.npy: holds an object array that needs pickle"


def _bad_mat(t):
    scipy.io.savemat(t / "r.mat", {"other": np.zeros((12, 3))})
    return (["--images", t / "img.npy", "--responses", t / "r.mat", "--mat-variable", "resp"],
            "r.mat: no variable 'resp' (has: other)")


def _bad_existing_out(t):
    (t / "out").mkdir()
    return ["--images", t / "img.npy", "--responses", t / "rsp.npy"], "out: already exists"


BAD = {f.__name__[5:]: f for f in (_bad_nan, _bad_inf, _bad_count, _bad_corrupt_image, _bad_truncated_image,
                                     _bad_empty_dir, _bad_mixed_sizes, _bad_csv, _bad_pickle, _bad_mat)}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_input(case, tiny, capsys):
    argv, expected = BAD[case](tiny)
    line = cli_error(capsys, tiny / "out", *argv)
    assert expected in line and str(tiny) in line, line


def test_cli_usage_error_one_line(tiny, capsys):
    line = cli_error(capsys, tiny / "out", "--images", tiny / "img.npy", "--responses", tiny / "rsp.npy",
                     "--crop", "-3")
    assert "--crop" in line


def test_cli_existing_out_untouched(tiny, capsys):
    argv, expected = _bad_existing_out(tiny)
    (tiny / "out" / "keep").write_text("x")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        build("--out", tiny / "out", *argv)
    assert exc.value.code == 2 and expected in capsys.readouterr().err
    assert (tiny / "out" / "keep").exists()
    # --overwrite replaces a dataset only: not a directory of other files
    with pytest.raises(SystemExit):
        build("--out", tiny / "out", *argv, "--overwrite")
    assert "out: not a dataset directory (no manifest.json)" in capsys.readouterr().err
    assert (tiny / "out" / "keep").exists()
    (tiny / "out" / "keep").unlink()
    build("--out", tiny / "out", *argv, "--overwrite")          # empty: written
    (tiny / "out" / "keep").write_text("x")                     # a dataset holding a user's file
    with pytest.raises(SystemExit):
        build("--out", tiny / "out", *argv, "--overwrite")
    assert "out: holds keep, not part of the dataset" in capsys.readouterr().err
    assert (tiny / "out" / "keep").read_text() == "x"
    (tiny / "out" / "keep").unlink()
    build("--out", tiny / "out", *argv, "--overwrite")          # a dataset: replaced
    assert data.read_manifest(tiny / "out")["n_neurons"] == 3


def test_mixed_sizes_accepted_with_size(tiny, capsys):
    argv, _ = _bad_mixed_sizes(tiny)
    build("--out", tiny / "ok", *argv, "--size", 8, "--val-fraction", 0)
    assert data.load_numpy(tiny / "ok", "train")[0].shape == (2, 8, 8, 1)


def test_writer_failure_leaves_nothing(tmp_path):
    def boom(path):
        raise RuntimeError("disk full")
    split = {"train": {"images": np.zeros((3, 4, 4), np.float32), "responses": np.zeros((3, 2), np.float32)}}
    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "ds", split, extra_files={"x": boom}, progress=False)
    no_leftovers(tmp_path / "ds")
    split["train"]["images"][0, 0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        write_dataset(tmp_path / "ds", split, progress=False)
    no_leftovers(tmp_path / "ds")


# --------------------------------------------------------------------------- bad datasets (reader)
@pytest.fixture
def ds_copy(small_ds, tmp_path):
    import shutil
    shutil.copytree(small_ds[0] / "four", tmp_path / "ds")
    return tmp_path / "ds"


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_damaged_shard(ds_copy, damage):
    shard = ds_copy / "train-00001-of-00004.tfrecord.gz"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else raw[:-9] + bytes([raw[-9] ^ 1]) + raw[-8:])
    with pytest.raises(DataError, match="train-00001-of-00004.tfrecord.gz: sha256 mismatch"):
        data.load(ds_copy, "train", 4)
    if damage == "truncate":
        with pytest.raises(DataError, match="could not be read"):
            data.load_numpy(ds_copy, "train", verify=False)


def test_manifest_newer_schema_and_missing(ds_copy):
    m = json.loads((ds_copy / "manifest.json").read_text())
    m["schema_version"] = 2
    (ds_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="schema_version 2 is newer"):
        data.load(ds_copy, "train", 4)
    with pytest.raises(DataError, match="not found"):
        data.read_manifest(ds_copy / "nope")
    with pytest.raises(DataError, match="no split 'val'"):
        m["schema_version"] = 1
        (ds_copy / "manifest.json").write_text(json.dumps(m))
        data.load(ds_copy, "val", 4)
    os.remove(ds_copy / "train-00000-of-00004.tfrecord.gz")
    with pytest.raises(DataError, match="shard missing"):
        data.load(ds_copy, "train", 4, verify=False)


def test_load_numpy_keeps_writer_order_across_shards(tmp_path):
    """Unshuffled reads return a multi-shard split exactly in the order it was written."""
    from data_prep.writer import write_dataset

    n = 70
    images = np.arange(n * 4 * 4, dtype=np.float32).reshape(n, 4, 4)
    responses = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    out = write_dataset(tmp_path / "ds", {"train": {"images": images, "responses": responses},
                                          "val": {"images": images[:5], "responses": responses[:5]}},
                        shard_size=16, progress=False)
    x, y = data.load_numpy(out, "train")
    assert len(data.read_manifest(out)["splits"]["train"]["shards"]) == 5
    np.testing.assert_array_equal(y[:, 0], np.arange(n))
    np.testing.assert_array_equal(x[..., 0], images)


# --------------------------------------------------------------------------- reader without TensorFlow
from tfsacnn.data import records  # noqa: E402


def _same(a, b):
    """Arrays identical in dtype, shape and bytes (None == None)."""
    assert (a is None) == (b is None)
    if a is not None:
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_crc32c_known_values():
    # CRC-32C check value (RFC 3720 B.4) and 32 zero bytes
    assert records.crc32c(np.frombuffer(b"123456789", np.uint8)[None])[0] == 0xE3069283
    assert records.crc32c(np.zeros((2, 32), np.uint8)).tolist() == [0x8A9136AA] * 2


@pytest.mark.parametrize("name", ["one", "four"])
@pytest.mark.parametrize("neurons", [None, "3,0"])
def test_records_reader_equals_tf_data(small_ds, name, neurons):
    """The reader without TensorFlow returns tf.data's arrays byte for byte, and its
    framing (with both masked crc32c) is the TF writer's byte for byte."""
    import gzip

    from tfsacnn.data import tfdata

    root = small_ds[0]
    want = tfdata.load_numpy(root / name, "train", neurons=neurons, with_repeats=True)
    got = records.load_numpy(root / name, "train", neurons=neurons, with_repeats=True)
    for a, b in zip(want, got):
        _same(a, b)
    tf_batches = list(data.load(root / name, "train", 4, neurons=neurons).as_numpy_iterator())
    our_batches = list(records.load(root / name, "train", 4, neurons=neurons))
    assert len(tf_batches) == len(our_batches) == 3
    for a, b in zip(tf_batches, our_batches):
        for x, y in zip(a, b):
            _same(x, y)
    for shard in sorted((root / name).glob("*.tfrecord.gz")):
        buf = gzip.decompress(shard.read_bytes())
        starts, lengths = records._offsets(shard, buf)
        rebuilt = b"".join(records.frame(buf[s:s + n]) for s, n in zip(starts, lengths))
        assert rebuilt == buf


def test_records_batches_shuffle_repeat(small_ds):
    root, _, rsp, _ = small_ds
    ds = records.load(root / "four", "train", 3, shuffle=True, seed=1)
    epochs = [np.concatenate([b[1][:, 0] for b in ds]) for _ in range(2)]
    assert sorted(epochs[0].astype(int)) == list(range(10)) == sorted(epochs[1].astype(int))
    assert not np.array_equal(epochs[0], epochs[1])              # reshuffled every epoch
    again = records.load(root / "four", "train", 3, shuffle=True, seed=1)
    np.testing.assert_array_equal(np.concatenate([b[1][:, 0] for b in again]), epochs[0])
    rep = records.load(root / "four", "train", 3, repeat=True, drop_remainder=True, neurons="1:3")
    it = iter(rep)
    batches = [next(it) for _ in range(7)]
    assert len(rep) == 3 and all(b[0].shape == (3, 4, 4, 1) and b[1].shape == (3, 2) for b in batches)
    np.testing.assert_array_equal(batches[3][1], rsp[:3, 1:3])    # second epoch starts over
    with pytest.raises(ConfigError, match="batch_size"):
        records.load(root / "four", "train", 0)


def _rewrite(shard, edit):
    """Decompress a shard, edit its bytes, write it back as valid GZIP."""
    import gzip

    buf = bytearray(gzip.decompress(shard.read_bytes()))
    edit(buf)
    shard.write_bytes(gzip.compress(bytes(buf)))


@pytest.mark.parametrize("where", ["data", "length"])
def test_corrupted_record_is_refused_by_both_readers(ds_copy, where):
    """A flipped bit inside a record (GZIP itself intact): tf.data and the reader without
    TensorFlow both refuse it; ours with one line naming the shard and the record."""
    shard = ds_copy / "train-00002-of-00004.tfrecord.gz"

    def flip(buf):
        buf[12 + 40 if where == "data" else 0] ^= 0x01  # a data byte / the length's low bit

    _rewrite(shard, flip)
    with pytest.raises(DataError, match="could not be read"):
        data.load_numpy(ds_copy, "train", verify=False)
    with pytest.raises(DataError) as e:
        records.load_numpy(ds_copy, "train", verify=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{shard}: "), msg
    assert msg.endswith(f"corrupted record 0 ({where} checksum mismatch)"), msg


def test_truncated_shard_is_refused_without_tensorflow(ds_copy):
    shard = ds_copy / "train-00001-of-00004.tfrecord.gz"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=f"^{shard}: not a readable GZIP shard"):
        records.load_numpy(ds_copy, "train", verify=False)
    with pytest.raises(DataError, match=f"^{shard}: sha256 mismatch"):
        records.load(ds_copy, "train", 2)


def test_manifest_counts_must_match_records(ds_copy, capsys):
    """A manifest whose counts disagree with the records in its shards is refused (one
    line naming the shard) wherever shards are verified; with verify=False it is not read."""
    m = json.loads((ds_copy / "manifest.json").read_text())
    info = m["splits"]["train"]
    real = info["shards"][1]["count"]
    info["shards"][1]["count"] += 1
    info["count"] += 1
    (ds_copy / "manifest.json").write_text(json.dumps(m))
    shard = ds_copy / info["shards"][1]["file"]
    for read in (lambda: data.load(ds_copy, "train", 4), lambda: records.load_numpy(ds_copy, "train"),
                 lambda: data.load_numpy(ds_copy, "train")):
        with pytest.raises(DataError) as e:
            read()
        assert str(e.value) == (f"{shard}: holds {real} records but manifest.json says "
                                f"{real + 1}; rebuild the dataset")


def test_writer_without_tensorflow_is_read_by_tf_data(tmp_path, monkeypatch):
    """Where TensorFlow is missing, shards are framed and gzipped in Python; tf.data and
    the reader without TensorFlow read them back exactly."""
    from data_prep import writer
    from tfsacnn.data import records, tfdata

    rng = np.random.default_rng(0)
    splits = {"train": {"images": rng.random((7, 6, 6), dtype=np.float32),
                        "responses": rng.random((7, 3), dtype=np.float32)},
              "val": {"images": rng.random((5, 6, 6), dtype=np.float32),
                      "responses": rng.random((5, 3), dtype=np.float32),
                      "repeats": rng.random((5, 2, 3), dtype=np.float32)}}
    monkeypatch.setattr(writer, "tensorflow_writer", lambda: None)
    out = writer.write_dataset(tmp_path / "py", splits, shard_size=3, progress=False)
    for split in ("train", "val"):
        a = tfdata.load_numpy(out, split, with_repeats=True)
        b = records.load_numpy(out, split, with_repeats=True)
        np.testing.assert_array_equal(a[0][..., 0], splits[split]["images"])
        np.testing.assert_array_equal(a[1], splits[split]["responses"])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
