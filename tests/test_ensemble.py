"""fpsm.ensemble: model averaging, prediction-file averaging and the command line."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from fpsm import create_fpsm
from fpsm.ensemble import EnsembleModel, average_predictions, main, normalize_weights

CLASSES = ["Atelectasis", "Cardiomegaly", "No Finding"]


def test_ensemble_model_is_weighted_mean_of_member_probs():
    torch.manual_seed(0)
    plain = create_fpsm("resnet10t", num_classes=3).eval()
    coded = create_fpsm("resnet10t", num_classes=3, use_binary_enc=True, num_datasets=2).eval()
    logits_net = timm.create_model("resnet10t", num_classes=3).eval()  # returns logits
    ens = EnsembleModel([plain, coded, logits_net], weights=[1, 2, 1]).eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.tensor([1, 0])
    with torch.no_grad():
        got = ens(images, ids)
        want = (plain(images).probs + 2 * coded(images, ids).probs + torch.sigmoid(logits_net(images))) / 4
        equal = EnsembleModel([plain, logits_net])(images)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(equal, (plain(images).probs + torch.sigmoid(logits_net(images))) / 2)
    assert got.shape == (2, 3)


def test_normalize_weights_errors():
    assert normalize_weights(None, 4) == [0.25] * 4
    assert normalize_weights([1, 3], 2) == [0.25, 0.75]
    with pytest.raises(ValueError, match="weights has 3 values but there are 2 members"):
        normalize_weights([1, 2, 3], 2)
    with pytest.raises(ValueError, match=r"weights must be finite, >= 0 and not all 0, got \[-1.0, 2.0\]"):
        normalize_weights([-1, 2], 2)
    with pytest.raises(ValueError, match="not all 0"):
        normalize_weights([0, 0], 2)
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleModel([])


def _write(path, ids, probs, columns=CLASSES):
    df = pd.DataFrame(probs, columns=columns)
    df.insert(0, "image_id", ids)
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def three_files(tmp_path):
    g = np.random.default_rng(0)
    ids = [f"{i:08d}_000.png" for i in range(7)]
    probs = [g.random((7, 3)) for _ in range(3)]
    a = _write(tmp_path / "a.csv", ids, probs[0])
    perm = g.permutation(7)  # b: rows shuffled and columns reordered
    b = _write(
        tmp_path / "b.csv", [ids[i] for i in perm], probs[1][perm][:, [2, 0, 1]], [CLASSES[j] for j in [2, 0, 1]]
    )
    c = _write(tmp_path / "c.csv", ids, probs[2])
    return [a, b, c], ids, probs


def test_average_predictions_equals_hand_mean(three_files):
    paths, ids, probs = three_files
    df = average_predictions(paths, weights=[1, 2, 1])
    assert list(df.columns) == ["image_id", *CLASSES]
    assert list(df["image_id"]) == ids  # the first file's order
    np.testing.assert_allclose(df[CLASSES].to_numpy(), (probs[0] + 2 * probs[1] + probs[2]) / 4, rtol=1e-12)
    equal = average_predictions(paths[:2])
    np.testing.assert_allclose(equal[CLASSES].to_numpy(), (probs[0] + probs[1]) / 2, rtol=1e-12)


def test_average_predictions_errors(three_files, tmp_path):
    paths, ids, probs = three_files
    other = _write(tmp_path / "other_ids.csv", [*ids[:-1], "99999999_000.png"], probs[0])
    with pytest.raises(
        ValueError,
        match=r"other_ids.csv: ids differ from .*a.csv: 1 missing .*00000006_000.png.*"
        r"1 extra .*99999999_000.png",
    ):
        average_predictions([paths[0], other])
    fewer = _write(tmp_path / "fewer.csv", ids[:5], probs[0][:5])
    with pytest.raises(ValueError, match="fewer.csv: ids differ"):
        average_predictions([paths[0], fewer])
    cols = _write(tmp_path / "cols.csv", ids, probs[0], ["Atelectasis", "Cardiomegaly", "Edema"])
    with pytest.raises(
        ValueError, match=r"cols.csv: class columns differ .*missing \['No Finding'\], extra \['Edema'\]"
    ):
        average_predictions([paths[0], cols])
    bad = probs[0].copy()
    bad[3, 1] = 1.5
    badf = _write(tmp_path / "bad.csv", ids, bad)
    with pytest.raises(ValueError, match=r"bad.csv:5: column 'Cardiomegaly' value '1.5' for 00000003_000.png"):
        average_predictions([badf])
    dup = _write(tmp_path / "dup.csv", [*ids[:-1], ids[0]], probs[0])
    with pytest.raises(ValueError, match=r"dup.csv:8: duplicate image_id '00000000_000.png'"):
        average_predictions([dup])
    (tmp_path / "noid.csv").write_text("dicom_id,Atelectasis\nx,0.5\n")
    with pytest.raises(ValueError, match="noid.csv: no 'image_id' column"):
        average_predictions([tmp_path / "noid.csv"])
    (tmp_path / "empty_cell.csv").write_text("image_id,Atelectasis\nx,\n")
    with pytest.raises(ValueError, match=r"empty_cell.csv:2: column 'Atelectasis' value '' for x"):
        average_predictions([tmp_path / "empty_cell.csv"])
    assert average_predictions([tmp_path / "noid.csv"], id_column="dicom_id")["Atelectasis"].tolist() == [0.5]
    with pytest.raises(ValueError, match="weights has 1 values but there are 3 members"):
        average_predictions(paths, weights=[1])


def test_cli_writes_weighted_mean(three_files, tmp_path, capsys):
    paths, _, _ = three_files
    out = tmp_path / "ens" / "ens.csv"
    assert main([str(p) for p in paths[:2]] + ["--weights", "1", "2", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    got = pd.read_csv(out, dtype={"image_id": str})
    want = average_predictions(paths[:2], [1, 2])
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    with pytest.raises(SystemExit) as exc:
        main([str(paths[0]), "--weights", "1", "2", "--out", str(out), "--overwrite"])
    assert exc.value.code == 2
    assert "weights has 2 values but there are 1 members" in capsys.readouterr().err


def test_cli_module_help():
    run = subprocess.run([sys.executable, "-m", "fpsm.ensemble", "--help"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "--weights" in run.stdout and "--out" in run.stdout
    assert "RuntimeWarning" not in run.stderr
