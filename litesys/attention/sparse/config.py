"""Sparse-attention settings: the original LiteSys flags, validated (``registry.build`` makes the method).

One method at a time: a logits processor (``--attn_local`` alone, ``--attn_topk``, ``--attn_block_topk``
[+ ``--attn_stride``], ``--attn_random_select``, ``--attn_random_nsample``, ``--attn_nsample``,
``--attn_oracle_topp``, ``--attn_custom NAME``) or Quest (``--quest_topk_blocks``). With a processor other than
local, ``--attn_local`` is the local window kept dense next to it (as in the original LiteSys). Layers in
``--attn_layer_skip`` (default: layer 0) stay dense. With Quest, the engine's KV page size is
``quest_block_size`` (Quest's blocks are the KV pages).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from litesys.attention.sparse import registry

# flag -> processor name; attn_block_topk becomes "stride" when attn_stride is set
_METHOD_FLAGS = {
    "attn_topk": "topk", "attn_block_topk": "block_topk", "attn_random_select": "random_select",
    "attn_random_nsample": "random_nsample", "attn_nsample": "oracle_sample", "attn_oracle_topp": "oracle_topp",
}
_DEFAULT_QUEST_BLOCK = 16


@dataclass(frozen=True)
class SparseConfig:
    attn_local: int | None = None  # StreamingLLM window alone; the local window with any other method
    attn_topk: int | None = None  # positions per KV group
    attn_block_topk: int | None = None  # blocks per KV group
    attn_block_size: int = 16
    attn_stride: int | None = None  # with attn_block_topk: overlapping blocks every `stride` positions
    attn_random_select: int | None = None  # uniform random positions per KV group
    attn_random_nsample: int | None = None  # same, with the importance-sampling correction
    attn_nsample: int | None = None  # oracle sampling: draws per query head from softmax(logits)
    attn_oracle_topp: float | None = None  # oracle top-p of the attention mass, per query head
    attn_custom: str | None = None  # any registered method by name
    attn_custom_args: dict = field(default_factory=dict)
    attn_sink: int = 4  # attention sinks always kept
    attn_layer_skip: list[int] = field(default_factory=lambda: [0])  # dense layers
    attn_seed: int = 0  # for the random methods' counter-based noise
    quest_block_size: int | None = None  # = KV page size (default 16 with Quest)
    quest_topk_blocks: int | None = None  # pages selected per step besides sink/local pages

    def __post_init__(self) -> None:
        object.__setattr__(self, "attn_layer_skip", list(self.attn_layer_skip))  # frozen: the one normalisation
        self.validate()

    @property
    def method(self) -> str | None:
        """The processor name, ``"quest"``, or None (dense)."""
        if self.quest_topk_blocks is not None:
            return "quest"
        if self.attn_custom is not None:
            return self.attn_custom
        for flag, name in _METHOD_FLAGS.items():
            if getattr(self, flag) is not None:
                return "stride" if name == "block_topk" and self.attn_stride is not None else name
        return "local" if self.attn_local is not None else None

    @property
    def quest_page_size(self) -> int:
        return self.quest_block_size or _DEFAULT_QUEST_BLOCK

    def validate(self) -> None:
        chosen = [f for f in (*_METHOD_FLAGS, "attn_custom", "quest_topk_blocks") if getattr(self, f) is not None]
        if len(chosen) > 1:
            raise ValueError(f"sparse methods are exclusive, got {' and '.join('--' + f for f in chosen)}; keep one")
        for f in ("attn_topk", "attn_block_topk", "attn_block_size", "attn_stride", "attn_random_select",
                  "attn_random_nsample", "attn_nsample", "quest_block_size", "quest_topk_blocks"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"--{f} must be an integer >= 1, got {v!r}")
        for f in ("attn_local", "attn_sink"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ValueError(f"--{f} must be an integer >= 0, got {v!r}")
        if self.attn_oracle_topp is not None and not (0.0 < self.attn_oracle_topp <= 1.0):
            raise ValueError(f"--attn_oracle_topp must be in (0, 1], got {self.attn_oracle_topp}")
        if self.attn_stride is not None and self.attn_block_topk is None:
            raise ValueError("--attn_stride needs --attn_block_topk K (the budget is K * attn_block_size positions)")
        needs_local = any(getattr(self, f) is not None for f in _METHOD_FLAGS) or self.attn_custom is not None
        if needs_local and self.attn_local is None:
            raise ValueError(f"--{chosen[0]} needs --attn_local N, the local window kept dense next to it "
                                 "(0 for none)")
        if self.attn_custom == "quest":
            raise ValueError("Quest is chosen with --quest_topk_blocks K, not --attn_custom quest")
        if self.attn_custom is not None:
            registry.get(self.attn_custom)  # raises with the registered names
        if self.quest_block_size is not None and self.quest_topk_blocks is None:
            raise ValueError("--quest_block_size needs --quest_topk_blocks K (pages attended besides sink/local)")
        if any(not isinstance(x, int) or x < 0 for x in self.attn_layer_skip):
            raise ValueError(f"--attn_layer_skip takes layer indices >= 0, got {self.attn_layer_skip}")

    def to_dict(self) -> dict:
        """Plain settings for run metadata (resume checks compare these)."""
        return asdict(self)
