"""dadam.config: the one definition of DADAM's options, its dict form (and files of release 0.1.0), its flags."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from dadam.config import COMPANION_RULES, DadamConfig, add_dadam_arguments, dadam_config_from_args


def test_companions_default_choices_and_validation():
    assert DadamConfig().companions == "cooccurrence" and COMPANION_RULES == ("cooccurrence", "correlation")
    assert DadamConfig(companions="correlation").validate().companions == "correlation"
    with pytest.raises(ValueError, match=r"companions must be one of \('cooccurrence', 'correlation'\), got 'rho'"):
        DadamConfig(companions="rho").validate()


def test_dict_round_trip_and_files_of_release_0_1_0():
    cfg = DadamConfig(p=0.25, tail=("Hernia", np.int64(3), torch.tensor(5).item()), companions="correlation")
    d = cfg.to_dict()
    assert d["tail"] == ["Hernia", 3, 5] and [type(t) for t in d["tail"]] == [str, int, int]
    assert json.loads(json.dumps(d)) == d and DadamConfig.from_dict(d) == cfg
    assert DadamConfig.from_dict(DadamConfig().to_dict()) == DadamConfig()
    # a dict written by 0.1.0 has no "companions": it stands for the rule that wrote it
    old = {k: v for k, v in DadamConfig(p=0.5).to_dict().items() if k != "companions"}
    assert DadamConfig.from_dict(old) == DadamConfig(p=0.5, companions="correlation")
    assert DadamConfig.from_dict({}).companions == "correlation"
    with pytest.raises(ValueError, match=r"unknown DADAM options \['q'\]"):
        DadamConfig.from_dict({"q": 1})


@pytest.mark.parametrize("prefix", ["", "dadam-"])
def test_flags_are_generated_with_choices_and_prefixed_cross_references(prefix, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside a flag name
    parser = argparse.ArgumentParser()
    add_dadam_arguments(parser, prefix=prefix)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"--{prefix}companions {{cooccurrence,correlation}}" in shown
    assert f"see --{prefix}tail-quantile)" in shown and f"(with --{prefix}companions correlation)" in shown
    if prefix:
        assert "see --tail-quantile" not in shown
    args = parser.parse_args([f"--{prefix}companions", "correlation", f"--{prefix}p", "1"])
    assert dadam_config_from_args(args, prefix=prefix) == DadamConfig(p=1.0, companions="correlation")
    with pytest.raises(SystemExit) as e:
        parser.parse_args([f"--{prefix}companions", "pearson"])
    assert e.value.code == 2 and "invalid choice: 'pearson'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(gamma=float("inf")), "gamma must be at most 6 .* got inf"),
        (dict(beta=1e9), "beta must be at most 6 .* got 1000000000.0"),
        (dict(gamma=float("nan")), "gamma and beta must be >= 0, got gamma=nan"),
        (dict(tail=[1.5]), r"tail classes must be class names or int indices, got 1.5 in tail=\(1.5,\)"),
        (dict(tail=[True]), "tail classes must be class names or int indices, got True"),
        (dict(max_patches=2.0), "max_patches must be an int >= 1, got 2.0"),
        (dict(soft_label="yes"), "soft_label must be a bool, got 'yes'"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        DadamConfig(**options).validate()
