"""Energy/traffic model: hand-computed values and input validation."""

import math

import numpy as np
import pytest

from nms.sw.energy import (EnergyParams, compare_training, full_training_traffic, link_energy_pj,
                           nms_traffic, nvm_energy_pj)


def test_defaults_and_sources():
    p = EnergyParams()
    # Horowitz ISSCC 2014: 640 pJ per 32-bit DRAM access = 20 pJ/bit; RRAM 10.9 / 1.76 pJ/bit.
    assert p.e_pcb == pytest.approx(640 / 32)
    assert (p.e_nvm_write, p.e_nvm_read, p.weight_bits) == (10.9, 1.76, 8)
    assert "e_near" in EnergyParams.PLACEHOLDERS


def test_full_training_by_hand():
    t = full_training_traffic(n_samples=1000, bytes_per_sample=784, epochs=10)
    assert (t.near_bytes, t.pcb_bytes) == (0, 7_840_000)
    # 7.84e6 B * 8 bit * 20 pJ/bit
    assert t.energy_pj() == pytest.approx(1.2544e9)


def test_nms_by_hand():
    t = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1)
    # near: 1 pass * 1000 * 784; PCB: 10 epochs * 100 * 784 + 100 indices * 4 B
    assert (t.near_bytes, t.pcb_bytes) == (784_000, 784_400)
    assert t.energy_pj() == pytest.approx(784_000 * 8 * 4.0 + 784_400 * 8 * 20.0)
    two = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, n_selected=100, passes=2)
    assert two.near_bytes == 2 * 784_000 and two.pcb_bytes == t.pcb_bytes
    measured = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1,
                           near_bytes=np.int64(123))
    assert measured.near_bytes == 123


def test_half_up_budget():
    assert nms_traffic(n_samples=15, bytes_per_sample=1, epochs=1, ratio=0.1,
                       index_bytes=0).pcb_bytes == 2  # 1.5 -> 2


def test_compare_saving():
    r = compare_training(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1)
    e_full = 1.2544e9
    e_nms = 784_000 * 32.0 + 784_400 * 160.0
    assert r["full"]["energy_pj"] == pytest.approx(e_full)
    assert r["nms"]["energy_pj"] == pytest.approx(e_nms)
    assert r["saving_ratio"] == pytest.approx(e_full / e_nms)
    assert r["saving_fraction"] == pytest.approx(1 - e_nms / e_full)
    # With e_near = e_pcb and many epochs the saving tends to 1/ratio minus the extra pass.
    p = EnergyParams(e_near=20.0)
    r2 = compare_training(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1,
                          index_bytes=0, params=p)
    assert r2["saving_ratio"] == pytest.approx(10 * 1000 / (1000 + 10 * 100))


def test_link_and_nvm_energy():
    assert link_energy_pj(near_bytes=1, pcb_bytes=2) == pytest.approx(8 * 4.0 + 16 * 20.0)
    assert nvm_energy_pj(weight_writes=1000) == pytest.approx(1000 * 8 * 10.9)
    assert nvm_energy_pj(weight_writes=0, weight_reads=10**6) == pytest.approx(1e6 * 8 * 1.76)
    p = EnergyParams(weight_bits=4, e_nvm_write=1.0)
    assert nvm_energy_pj(weight_writes=3, params=p) == pytest.approx(12.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0, bytes_per_sample=1, epochs=1, ratio=0.1), "n_samples"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=0, ratio=0.1), "epochs"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, ratio=1.5), "ratio"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1), "ratio"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, n_selected=11), "n_selected"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, ratio=0.5, passes=0), "passes"),
    (dict(n_samples=10.5, bytes_per_sample=1, epochs=1, ratio=0.5), "n_samples"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nms_traffic(**kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="e_pcb"):
        EnergyParams(e_pcb=-1.0)
    with pytest.raises(ValueError, match="e_near"):
        EnergyParams(e_near=math.nan)
    with pytest.raises(ValueError, match="weight_bits"):
        EnergyParams(weight_bits=0)
    with pytest.raises(ValueError, match="weight_writes"):
        nvm_energy_pj(weight_writes=-1)
