"""Kinetics cost model (Sadhukhan et al. 2025, arXiv 2506.05333): what generating one sample costs.

    eFLOPs = C_comp + I * C_mem        (I: the GPU's arithmetic intensity, FLOPs per byte of HBM traffic)

For a sample with ``P`` prompt tokens and ``G`` generated tokens (docs/cost.md has the derivation):

* **linear FLOPs**: ``2 * A * (P + G - 1) + 2 * V * H * G``. ``A`` = the matmul weights one token passes through
  (q/k/v/o, the MLP; for MoE the router, the ``top_k`` routed experts and any shared expert, never the other
  experts), ``V * H`` the LM head, run once per sampled token. The prefill runs ``P`` positions, then ``G - 1``
  decode steps feed the generated tokens back (the last one is never fed).
* **attention**: decode step ``s = 1 .. G-1`` attends ``c = P + s`` positions. A dense layer reads the K and V
  of all ``c`` (``4 * Hq * d * c`` FLOPs, ``2 * Hkv * d * b * c`` bytes). A sparse layer reads what the method
  needs: the K and V of its budget ``B`` (``min(c, B)``) plus, once ``c > B``, its scoring pass (all the keys for
  the oracle methods; one summary vector per block for block top-k; min and max per page for Quest). The prefill
  is dense and causal: ``4 * Hq * d * P (P + 1) / 2`` FLOPs, and it writes ``P`` positions' K/V.
* **bytes**: KV-cache traffic only. Weight reads are shared by the whole running batch, so per sample they
  vanish at the batch sizes long generations run at (Kinetics leaves them out for the same reason).

Every sum over the ``G - 1`` decode steps is in closed form (exact integers), so a 32K-token sample costs a
few arithmetic operations.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# Dense BF16 tensor-core FLOP/s (no 2:4 sparsity) and HBM bandwidth, from the vendors' datasheets (docs/cost.md
# cites them). I = FLOP/s / (byte/s). Patterns are tried in order against torch.cuda.get_device_name().
GPUS: dict[str, tuple[float, float]] = {  # name: (TFLOP/s, TB/s)
    "H100 PCIe": (756.0, 2.0),
    "H100 NVL": (835.0, 3.9),
    "H100": (989.4, 3.35),  # SXM5
    "H200 NVL": (835.0, 4.8),
    "GH200": (989.4, 4.0),
    "H200": (989.4, 4.8),  # SXM
    "H20": (148.0, 4.0),
    "B200": (2250.0, 8.0),
    "A100 40GB": (312.0, 1.555),
    "A100 PCIe": (312.0, 1.935),  # 80GB PCIe
    "A100": (312.0, 2.039),  # 80GB SXM4
    "L40S": (362.05, 0.864),
    "L40": (181.05, 0.864),
    "L4": (121.0, 0.3),
    "A10": (125.0, 0.6),
    "MI300X": (1307.4, 5.3),
}
_PATTERNS = [("H100 PCIe", r"H100.*PCIe"), ("H100 NVL", r"H100.*NVL"), ("GH200", r"GH200"), ("H100", r"H100"),
             ("H200 NVL", r"H200.*NVL"), ("H200", r"H200"), ("H20", r"\bH20\b"), ("B200", r"B200"),
             ("A100 40GB", r"A100.*40\s*GB"), ("A100 PCIe", r"A100.*PCIe"), ("A100", r"A100"), ("L40S", r"L40S"),
             ("L40", r"L40\b"), ("L4", r"\bL4\b"), ("A10", r"\bA10G?\b"), ("MI300X", r"MI300X")]
DEFAULT_GPU = "H100"  # the reference when no GPU is visible (CPU runs) and none is named


def gpu_key(device_name: str | None) -> str | None:
    """The table entry of a device name (``torch.cuda.get_device_name``), or None when it is not in the table."""
    if not device_name:
        return None
    if device_name in GPUS:
        return device_name
    return next((key for key, pat in _PATTERNS if re.search(pat, device_name, re.IGNORECASE)), None)


def arith_intensity(device_name: str | None = None) -> tuple[float, str]:
    """(FLOPs per byte, where it came from) for a GPU name; the default GPU's when the name is unknown."""
    key = gpu_key(device_name)
    source = key if key else f"{DEFAULT_GPU} (default: {'no GPU' if not device_name else repr(device_name)})"
    tflops, tbs = GPUS[key or DEFAULT_GPU]
    return tflops / tbs, source


def resolve_intensity(intensity: float | None, gpu: str | None) -> tuple[float, str] | None:
    """``--arith-intensity I`` / ``--gpu NAME`` (the eval scripts' and the report's, one definition): (I, where it
    came from), or None when neither is given (each run's own GPU sets I). ValueError names the flag."""
    if intensity is not None and not intensity > 0:
        raise ValueError(f"--arith-intensity must be > 0 FLOPs/byte, got {intensity}")
    if gpu is None:
        return None if intensity is None else (float(intensity), "--arith-intensity")
    if intensity is not None:
        raise ValueError("pass --arith-intensity or --gpu, not both")
    key = gpu_key(gpu)
    if key is None:
        raise ValueError(f"--gpu {gpu!r} is not in the table ({', '.join(GPUS)}); pass --arith-intensity")
    return arith_intensity(key)[0], key


# ---------------------------------------------------------------- model shape


@dataclass(frozen=True)
class ModelShape:
    """What the cost needs of a model: sizes per token, not weights."""

    num_layers: int
    hidden: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    active_params: int  # matmul weights per token in the layers (no embedding, no norms, no LM head)

    @classmethod
    def from_config(cls, raw: dict) -> ModelShape:
        """From a transformers ``config.json`` dict (Qwen2/Qwen3/Qwen3-MoE/Qwen2-MoE fields)."""
        h, n_layers = raw["hidden_size"], raw["num_hidden_layers"]
        hq = raw["num_attention_heads"]
        hkv = raw.get("num_key_value_heads") or hq
        d = raw.get("head_dim") or h // hq
        attn = h * hq * d + 2 * h * hkv * d + hq * d * h  # q, k, v, o
        experts = raw.get("num_experts") or raw.get("num_local_experts") or raw.get("n_routed_experts") or 0
        step = raw.get("decoder_sparse_step") or 1
        dense_only = set(raw.get("mlp_only_layers") or [])
        moe_i = raw.get("moe_intermediate_size") or 0
        shared_i = raw.get("shared_expert_intermediate_size") or (raw.get("n_shared_experts") or 0) * moe_i
        total = 0
        for i in range(n_layers):
            if experts and i not in dense_only and (i + 1) % step == 0:
                mlp = h * experts + raw["num_experts_per_tok"] * 3 * h * moe_i  # router + routed experts only
                if shared_i:
                    mlp += 3 * h * shared_i + (h if raw.get("shared_expert_intermediate_size") else 0)  # + its gate
            else:
                mlp = 3 * h * raw["intermediate_size"]  # gate, up, down
            total += attn + mlp
        return cls(n_layers, h, hq, hkv, d, raw["vocab_size"], total)


# ---------------------------------------------------------------- what a method reads


@dataclass(frozen=True)
class Method:
    """One decode step of a sparse layer at context ``c``: K and V of ``min(c, budget)`` positions, and once
    ``c > budget`` the scoring pass: ``score="keys"`` reads every key (q·k at all ``c`` positions; the kept keys
    are then not read again, only their values), ``score="summaries"`` reads ``per_block`` vectors per
    ``block`` positions (rounded up) per KV head. ``budget=None``: dense."""

    name: str = "dense"
    budget: int | None = None
    score: str = "none"  # none | keys | summaries
    block: int = 1
    per_block: int = 0
    dense_layers: tuple[int, ...] = ()  # layers the method leaves dense

    @classmethod
    def from_sparse(cls, sparse: dict | None, num_q_heads: int = 1, num_kv_heads: int = 1) -> Method:
        """From ``SparseConfig.to_dict()`` (``run_config.json``'s ``sparse``); None or no method: dense."""
        if not sparse:
            return cls()
        from litesys.attention.sparse.config import SparseConfig

        if isinstance(sparse, dict) and sparse.get("attn_custom") and sparse.get("quest_topk_blocks") is None:
            # a custom method may not be registered where the report runs; its kept set is data-dependent anyway
            skip = tuple(sorted(set(sparse.get("attn_layer_skip") or ())))
            return cls(sparse["attn_custom"], None, "keys", dense_layers=skip)
        cfg = SparseConfig(**sparse) if not isinstance(sparse, SparseConfig) else sparse
        m = cfg.method
        if m is None:
            return cls()
        skip = tuple(sorted(set(cfg.attn_layer_skip)))
        sink, local = cfg.attn_sink, cfg.attn_local or 0
        if m == "quest":
            from litesys.kernels.ref.quest import page_counts

            s = cfg.quest_page_size
            n_sink, n_local = page_counts(s, sink, local)
            return cls(m, s * (n_sink + cfg.quest_topk_blocks + n_local), "summaries", s, 2, skip)
        if m == "local":
            return cls(m, sink + local, "none", dense_layers=skip)
        if m == "topk":
            return cls(m, sink + local + cfg.attn_topk, "keys", dense_layers=skip)
        if m in ("block_topk", "stride"):
            s = cfg.attn_block_size
            if m == "block_topk":  # dense up to whole blocks (block_topk.py's n_full); block means score
                from litesys.kernels.common import cdiv

                return cls(m, cdiv(sink + local + cfg.attn_block_topk * s, s) * s, "summaries", s, 1, skip)
            return cls(m, sink + local + cfg.attn_block_topk * s, "summaries", cfg.attn_stride, 1, skip)
        if m in ("random_select", "random_nsample"):  # positions drawn without looking at the keys
            n = cfg.attn_random_select if m == "random_select" else cfg.attn_random_nsample
            return cls(m, sink + local + n, "none", dense_layers=skip)
        if m == "oracle_sample":  # draws per query head from the full softmax: at most N distinct per head
            return cls(m, sink + local + cfg.attn_nsample * max(1, num_q_heads // num_kv_heads), "keys",
                       dense_layers=skip)
        # oracle_topp and custom methods keep a data-dependent set: charged as dense (an upper bound)
        return cls(m, None, "keys", dense_layers=skip)


# ---------------------------------------------------------------- closed-form sums over decode steps


def _sum(a: int, b: int) -> int:
    """sum of c for c in [a, b] (0 when empty)."""
    return (a + b) * (b - a + 1) // 2 if b >= a else 0


def _sum_floor_div(n: int, s: int) -> int:
    """sum of c // s for c in [0, n]."""
    if n < 0:
        return 0
    q, r = divmod(n + 1, s)  # q full runs of s values (0..q-1 each s times), then r values of q
    return s * q * (q - 1) // 2 + q * r


def _sum_ceil_div(a: int, b: int, s: int) -> int:
    """sum of ceil(c / s) for c in [a, b]."""
    if b < a:
        return 0
    return _sum_floor_div(b + s - 1, s) - _sum_floor_div(a + s - 2, s)


def _split(a: int, b: int, budget: int) -> tuple[int, int, int, int]:
    """Steps c in [a, b] split at the budget: (sum of min(c, budget), first c > budget, count above, last)."""
    lo_end = min(b, budget)
    above_start = max(a, budget + 1)
    n_above = max(0, b - above_start + 1)
    return _sum(a, lo_end) + budget * n_above, above_start, n_above, b


@dataclass
class SampleCost:
    linear_flops: int
    attn_flops: int
    kv_bytes: int
    arith_intensity: float

    @property
    def flops(self) -> int:
        return self.linear_flops + self.attn_flops

    @property
    def eflops(self) -> float:
        return self.flops + self.arith_intensity * self.kv_bytes

    def to_json(self) -> dict:
        return {"linear_flops": self.linear_flops, "attn_flops": self.attn_flops, "flops": self.flops,
                "kv_bytes": self.kv_bytes, "eflops": self.eflops, "arith_intensity": self.arith_intensity}


@dataclass(frozen=True)
class CostModel:
    shape: ModelShape
    method: Method = Method()
    kv_elem_bytes: int = 2  # bf16 KV cache
    arith_intensity: float = GPUS[DEFAULT_GPU][0] / GPUS[DEFAULT_GPU][1]

    def sample(self, prompt_tokens: int, generated_tokens: int) -> SampleCost:
        """Cost of prefilling ``prompt_tokens`` and generating ``generated_tokens`` (exact integers)."""
        sh, m = self.shape, self.method
        p, g = int(prompt_tokens), int(generated_tokens)
        if p < 0 or g < 0:
            raise ValueError(f"token counts must be >= 0, got prompt_tokens={p} generated_tokens={g}")
        if p == 0 and g == 0:
            return SampleCost(0, 0, 0, self.arith_intensity)
        qd, kvd = sh.num_q_heads * sh.head_dim, sh.num_kv_heads * sh.head_dim  # per layer, per position
        b = self.kv_elem_bytes
        linear = 2 * sh.active_params * (p + max(g - 1, 0)) + 2 * sh.vocab * sh.hidden * g
        # prefill (dense, causal) + its K/V writes, every layer
        attn = sh.num_layers * 4 * qd * _sum(1, p)
        kv = sh.num_layers * 2 * kvd * b * p
        a, z = p + 1, p + g - 1  # contexts of the decode steps
        steps, ctx = max(0, z - a + 1), _sum(a, z)
        n_sparse = 0 if m.budget is None and m.score == "none" else \
            sh.num_layers - len([x for x in m.dense_layers if x < sh.num_layers])
        n_dense = sh.num_layers - n_sparse
        attn += n_dense * 4 * qd * ctx
        kv += n_dense * 2 * kvd * b * (ctx + steps)  # read c positions + write the new one
        if n_sparse:
            budget = m.budget if m.budget is not None else z + 1  # None: every position is kept
            kept, first, n_above, last = _split(a, z, budget)
            a_flops, a_bytes = 4 * qd * kept, 2 * kvd * b * kept  # K + V of the kept positions
            if m.score == "keys" and n_above:  # every key scored; the kept ones are not read twice
                above = _sum(first, last)
                a_flops += 2 * qd * (above - budget * n_above)
                a_bytes += kvd * b * (above - budget * n_above)
            elif m.score == "summaries" and n_above:
                vecs = m.per_block * _sum_ceil_div(first, last, m.block)
                a_flops += 2 * qd * vecs
                a_bytes += kvd * b * vecs
            attn += n_sparse * a_flops
            kv += n_sparse * (a_bytes + 2 * kvd * b * steps)
        return SampleCost(linear, attn, kv, self.arith_intensity)

    def to_json(self) -> dict:
        return {"shape": asdict(self.shape), "method": asdict(self.method), "kv_elem_bytes": self.kv_elem_bytes,
                "arith_intensity": self.arith_intensity}

    @classmethod
    def from_json(cls, d: dict, arith_intensity: float | None = None) -> CostModel:
        m = dict(d["method"])
        m["dense_layers"] = tuple(m.get("dense_layers") or ())
        return cls(ModelShape(**d["shape"]), Method(**m), int(d["kv_elem_bytes"]),
                   float(arith_intensity if arith_intensity is not None else d["arith_intensity"]))


def from_llm(llm, device_name: str | None = None, intensity: float | None = None) -> CostModel | None:
    """The cost model of a built ``LLM`` (its config.json, KV dtype, sparse settings); None when it lacks them.
    ``intensity``: I in FLOPs/byte (default: the table's, for ``device_name``)."""
    raw = getattr(getattr(llm, "cfg", None), "raw", None)
    if not raw:
        return None
    shape = ModelShape.from_config(raw)
    sparse = getattr(llm, "sparse", None)
    method = Method.from_sparse(sparse.to_dict() if sparse is not None else None, shape.num_q_heads,
                                shape.num_kv_heads)
    kv = getattr(llm, "kv", None)
    dtype = getattr(getattr(kv, "k", None), "dtype", None) or getattr(llm, "dtype", None)
    elem = getattr(dtype, "itemsize", 2)
    return CostModel(shape, method, int(elem), arith_intensity(device_name)[0] if intensity is None else intensity)
