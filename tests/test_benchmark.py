"""scripts/benchmark.py in its quick mode prints every figure (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_prints_every_figure(isbi_dir, tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--json",
                             str(tmp_path / "figures.json")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for label in ("matmul", "(a) peer", "(b) bundle training end to end", "(a) the same peer loop again",
                  "    emseg.engine.precision: measured on cpu (training step", "    emseg.data.workers: data loading", "(c) network + loss + optimizer alone",
                  "(d) share", "(e) inference 128x128 without TTA", "(e) inference 256x256 with 8-fold TTA",
                  "(f) peak memory", "(g)", "(h) supply, feed loader (the bundle's choice here)",
                  "(h) supply, feed device:", "(h) with the bundle's feed (loader)",
                  "(b) bundle training end to end with feed device instead", "(i) network + loss + optimizer by batch", "(j) "):
        assert any(line.startswith(label) for line in lines), label
    figures = json.loads(lines[-1])
    assert figures == json.loads((tmp_path / "figures.json").read_text())
    for key in ("matmul_gflops_float32", "matmul_gflops_bfloat16", "a_peer_patches_per_s", "b_bundle_patches_per_s",
                "a_peer_allocator_patches_per_s",
                "c_network_patches_per_s", "d_outside_share", "e_inference_128_no_tta_slices_per_s",
                "e_inference_256_tta_slices_per_s", "g_flops_per_patch", "g_achieved_gflops", "g_ratio_to_matmul",
                "h_supply_patches_per_s", "h_supply_to_network", "h_supply_loader_patches_per_s",
                "h_supply_device_patches_per_s", "b_bundle_feed_device_patches_per_s", "i_batch_size",
                "i_learning_rate"):
        assert figures[key] > 0 or key == "d_outside_share", key
    assert set(figures["i_network_patches_per_s_by_batch"]) == {"2", "4"}
    # (j) compiles with the machine's C++ compiler; where torch.compile fails the benchmark says why and goes on
    assert (figures.get("j_compiled_patches_per_s", 0) > 0 and figures["j_compile_seconds"] > 0) \
        or figures["j_compile_error"]
    assert set(figures["memory"]) == {"a", "b", "c", "e"} and all(m["rss_mib"] > 0 for m in figures["memory"].values())
