"""benchmarks/step_profile.py on the CPU: the kernel kinds of names seen in H200 profiles, and its usage errors."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import step_profile  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("_decode_split_kernel", "attention"), ("_decode_merge_kernel", "attention"),
    ("_quest_decode_kernel", "attention"), ("_moe_route_kernel", "router"),
    ("_gate_up_kernel", "experts"), ("_down_kernel", "experts"), ("_align_kernel", "experts"),
    ("nvjet_sm90_tst_192x32_64x7_2x1_v_bz_TNT", "projections"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>", "projections"),
    ("_add_rms_norm_kernel", "small"), ("_qk_norm_rope_kernel", "small"), ("_kv_write_fp8_kernel", "small"),
    ("_kv_write_kernel", "small"),
    ("void at::native::index_elementwise_kernel<128, 4>", "small"), ("_silu_mul_kernel", "small"),
    ("void at::native::mbtopk::gatherTopK<c10::BFloat16, unsigned int, 2>", "sampler"),
    ("void at::native::bitonicSortKVInPlace<2, -1, 16, 16, float, long>", "sampler"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>", "sampler"),
    ("Memset (Device)", "other"),
])
def test_kernel_kinds(name: str, kind: str) -> None:
    assert step_profile.kind_of(name) == kind


def test_bad_flags_and_no_gpu_are_one_line_exit_2(capsys) -> None:
    for argv in (["-n", "0"], ["--context", "0"], ["--steps", "0"]):
        with pytest.raises(SystemExit) as e:
            step_profile.main(argv)
        assert e.value.code == 2 and "-n, --context and --steps" in str(e.value)
    with pytest.raises(SystemExit, match="--json") as e:
        step_profile.main(["--json", "/nonexistent/dir/x.json"])
    assert e.value.code == 2
    with pytest.raises(SystemExit, match="CUDA device") as e:
        step_profile.main([])
    assert e.value.code == 2
