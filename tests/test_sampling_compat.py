"""The paper's rule stays bit for bit: ``companions="correlation"`` draws exactly the params of release 0.1.0.

``tests/data/correlation_rule_0.1.0.safetensors`` holds what the 0.1.0 sampler drew (seed 1234, two consecutive
``aug.sample(labels)`` calls per case) for the bank ``tests/data/sampler_bank_0.1.0.safetensors`` and
``LabelStats(freq, corr, num_samples=...)``; the cases and their options are JSON in the file's metadata.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dadam import DiseasedAreaAugment, LabelStats, PatchBank

DATA = pathlib.Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "correlation_rule_0.1.0.safetensors"
FIELDS_0_1_0 = ("boxes", "patch_ids", "classes", "active", "alpha", "mode", "changed", "labels")


def _metadata() -> dict[str, str]:
    with safe_open(str(FIXTURE), framework="pt") as f:
        return f.metadata()


CASES = json.loads(_metadata()["cases"])


@pytest.fixture(scope="module")
def recorded():
    return load_file(str(FIXTURE))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("threads", [1, 2])  # both inverse-CDF paths of the CPU
def test_correlation_rule_reproduces_release_0_1_0(recorded, case, threads):
    meta = _metadata()
    bank = PatchBank.load(DATA / "sampler_bank_0.1.0.safetensors")
    stats = LabelStats(recorded["freq"], recorded["corr"], num_samples=int(meta["num_samples"]))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        aug = DiseasedAreaAugment(bank, stats, generator=int(meta["seed"]), companions="correlation", **CASES[case])
        for call in range(2):
            params = aug.sample(recorded["labels"])
            for name in FIELDS_0_1_0:
                got, want = getattr(params, name), recorded[f"{case}.{call}.{name}"]
                assert got.dtype == want.dtype and got.shape == want.shape, (case, call, name)
                assert torch.equal(got, want), f"{case}, call {call}: {name} differs at {int((got != want).sum())}"
    finally:
        torch.set_num_threads(old_threads)
    assert params.changed.any() and (params.mode == 1).any() and (params.mode == 2).any()


def test_the_fixture_exercises_every_option():
    assert {"default", "wide", "single", "tail"} <= set(CASES)
    assert CASES["wide"]["jitter"] > 0 and CASES["wide"]["soft_label"] and CASES["single"]["max_patches"] == 1
