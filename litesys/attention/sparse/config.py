"""Sparse-attention settings: the original LiteSys flags, validated, plus ``build`` which the engine calls.

One method at a time: a logits processor (``--attn_local`` alone, ``--attn_topk``, ``--attn_block_topk``
[+ ``--attn_stride``], ``--attn_random_select``, ``--attn_random_nsample``, ``--attn_nsample``,
``--attn_oracle_topp``, ``--attn_custom NAME``) or Quest (``--quest_topk_blocks``). With a processor other than
local, ``--attn_local`` is the local window kept dense next to it (as in the original LiteSys). Layers in
``--attn_layer_skip`` (default: layer 0) stay dense. With Quest, the engine's KV page size is
``quest_block_size`` (Quest's blocks are the KV pages).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

from litesys.attention.sparse import quest, registry
from litesys.attention.sparse.common import Heads

# flag -> processor name; attn_block_topk becomes "stride" when attn_stride is set
_METHOD_FLAGS = {
    "attn_topk": "topk", "attn_block_topk": "block_topk", "attn_random_select": "random_select",
    "attn_random_nsample": "random_nsample", "attn_nsample": "oracle_sample", "attn_oracle_topp": "oracle_topp",
}
_DEFAULT_QUEST_BLOCK = 16


@dataclass
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
        self.attn_layer_skip = list(self.attn_layer_skip)
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
        if self.attn_custom is not None:
            registry.get(self.attn_custom)  # raises with the registered names
        if self.quest_block_size is not None and self.quest_topk_blocks is None:
            raise ValueError("--quest_block_size needs --quest_topk_blocks K (pages attended besides sink/local)")
        if any(not isinstance(x, int) or x < 0 for x in self.attn_layer_skip):
            raise ValueError(f"--attn_layer_skip takes layer indices >= 0, got {self.attn_layer_skip}")

    def to_dict(self) -> dict:
        """Plain settings for run metadata (resume checks compare these)."""
        return asdict(self)


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sparse attention (docs/sparse.md)")
    g.add_argument("--attn_local", type=int, help="StreamingLLM local window; with another method: its local window")
    g.add_argument("--attn_topk", type=int, help="top-k positions per KV group")
    g.add_argument("--attn_block_topk", type=int, help="top-k blocks per KV group")
    g.add_argument("--attn_block_size", type=int, default=16, help="block size of --attn_block_topk")
    g.add_argument("--attn_stride", type=int, help="with --attn_block_topk: overlapping blocks every STRIDE tokens")
    g.add_argument("--attn_random_select", type=int, help="N uniform random positions per KV group")
    g.add_argument("--attn_random_nsample", type=int, help="N random positions with importance-sampling correction")
    g.add_argument("--attn_nsample", type=int, help="oracle sampling: N draws per head from the attention")
    g.add_argument("--attn_oracle_topp", type=float, help="oracle: smallest set holding P of the attention mass")
    g.add_argument("--attn_custom", type=str, help="a registered method by name (e.g. threshold)")
    g.add_argument("--attn_custom_arg", action="append", default=[], metavar="KEY=VALUE",
                   help="option for --attn_custom (repeatable)")
    g.add_argument("--attn_sink", type=int, default=4, help="attention sinks always kept")
    g.add_argument("--attn_layer_skip", type=int, nargs="*", default=[0], help="layers kept dense (default: 0)")
    g.add_argument("--attn_seed", type=int, default=0, help="seed of the random methods")
    g.add_argument("--quest_block_size", type=int, help="Quest block = KV page size (default 16)")
    g.add_argument("--quest_topk_blocks", type=int, help="Quest: pages per step besides sink/local pages")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def from_args(args: argparse.Namespace) -> SparseConfig | None:
    """The config from ``add_cli_args`` flags, or None when no sparse method is asked for."""
    custom_args = {}
    for item in getattr(args, "attn_custom_arg", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--attn_custom_arg takes KEY=VALUE, got {item!r}")
        custom_args[key] = _parse_value(value)
    names = [f for f in SparseConfig.__dataclass_fields__ if f != "attn_custom_args"]
    cfg = SparseConfig(**{f: getattr(args, f) for f in names if hasattr(args, f)}, attn_custom_args=custom_args)
    return cfg if cfg.method is not None else None


def build(cfg: SparseConfig | None, num_layers: int, num_q_heads: int, num_kv_heads: int, page_size: int,
          quest_backend: str = "auto", heads: Heads | None = None
          ) -> tuple[dict[int, list], quest.QuestSelector | None]:
    """(processors per layer, selector) for ``Attention``; dense layers get no entry.

    ``heads``: this rank's place among the model's heads under tensor parallelism (global head offsets, the
    communicator of split KV groups: ``litesys.engine.distributed.sparse_heads``); default: all heads, one rank."""
    if cfg is None or cfg.method is None:
        return {}, None
    bad = [x for x in cfg.attn_layer_skip if x >= num_layers]
    if bad:
        raise ValueError(f"--attn_layer_skip {bad} is past the model's {num_layers} layers (0..{num_layers - 1})")
    if heads is None:
        heads = Heads(num_q_heads, num_kv_heads, num_layers)
    elif (heads.num_q_heads, heads.num_kv_heads) != (num_q_heads, num_kv_heads):
        raise ValueError(f"heads {heads} do not match num_q_heads={num_q_heads}, num_kv_heads={num_kv_heads}")
    if cfg.method == "quest":
        if page_size != cfg.quest_page_size:
            raise ValueError(f"quest_block_size={cfg.quest_page_size} must equal the KV page size {page_size}; "
                             "build the engine with page_size=cfg.quest_page_size")
        return {}, quest.from_config(cfg, num_layers, page_size, quest_backend, heads)
    proc = registry.get(cfg.method)(cfg, heads)
    skip = set(cfg.attn_layer_skip)
    return {layer: [proc] for layer in range(num_layers) if layer not in skip}, None
