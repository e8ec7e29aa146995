"""Every sparse method once, at sizes for tiny CPU models (page size 4): the tables the TP and swap tests share."""
from __future__ import annotations

PAGE = 4
BASE = dict(attn_sink=2, attn_local=4, attn_layer_skip=[])
METHODS = {
    "local": dict(attn_sink=2, attn_local=6, attn_layer_skip=[]),
    "topk": dict(attn_topk=6, **BASE),
    "block_topk": dict(attn_block_topk=2, attn_block_size=4, **BASE),
    "stride": dict(attn_block_topk=2, attn_block_size=4, attn_stride=2, **BASE),
    "random_select": dict(attn_random_select=6, **BASE),
    "random_nsample": dict(attn_random_nsample=6, **BASE),
    "oracle_sample": dict(attn_nsample=16, **BASE),
    "oracle_topp": dict(attn_oracle_topp=0.8, **BASE),
    "threshold": dict(attn_custom="threshold", attn_custom_args={"tau": 1.0}, **BASE),
    "quest": dict(quest_topk_blocks=2, quest_block_size=PAGE, **BASE),
    "local_pages": dict(attn_custom="local_pages", **BASE),
}
