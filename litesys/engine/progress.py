"""Progress of one ``generate`` call: the engine's counters (``ProgressStats``) and the tqdm bar that shows them.

The engine fills ``ProgressStats`` at the host-sync points it already has (every ``check_every`` steps, when it
reads the finish flags), so reporting costs no extra device reads. The bar derives tok/s from the engine's
generated-token count (not from finished samples) and a token-based ETA: the remaining token budget (each
unfinished sample may still generate up to its ``max_new_tokens``) over the measured tok/s, an upper bound that
tightens as samples finish.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressStats:
    generated: int  # tokens sampled so far in this call (finished, running and preempted samples)
    running: int  # sequences in the running batch
    finished: int  # samples complete
    samples: int  # samples in this call (sum of n)
    budget: int  # token budget of the call: sum over samples of min(max_new_tokens, max_seq_len - prompt)
    budget_done: int  # finished samples' whole budget + the tokens of the unfinished ones
    prefix_hit_tokens: int = 0  # prompt tokens found in the prefix cache (engine/prefix_cache.py)
    prefix_tokens: int = 0  # prompt tokens of the prefill steps so far (recomputes included)

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hit_tokens / self.prefix_tokens if self.prefix_tokens else 0.0

    @property
    def budget_left(self) -> int:
        return max(self.budget - self.budget_done, 0)


def _eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressBar:
    """A tqdm bar counting finished ``unit``s, with the engine's tok/s, running batch and token-based ETA.

    ``update(stats)`` is the engine's ``on_progress`` callback; ``done(n)`` counts finished units. Disabled when
    ``enabled`` is false or ``LITESYS_NO_PROGRESS=1``. ``clock`` is injectable for tests.
    """

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool = True, position: int = 0,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.5):
        self.clock, self.t0, self.min_interval = clock, clock(), min_interval
        self.last, self.extra, self.postfix = -float("inf"), "", ""
        self.stats: ProgressStats | None = None
        self.bar = None
        if enabled and os.environ.get("LITESYS_NO_PROGRESS") != "1":
            from tqdm.auto import tqdm
            # tqdm's own rate and ETA count finished units, which arrive in bursts: show the engine's instead
            self.bar = tqdm(total=total, desc=desc, unit=unit, position=position, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]")

    def describe(self, stats: ProgressStats) -> str:
        """``tok/s=.. batch=.. eta=..`` from the engine's counters."""
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = stats.generated / elapsed
        eta = _eta(stats.budget_left / rate) if rate > 0 else "?"
        cache = f" cache={stats.prefix_hit_rate:.0%}" if stats.prefix_tokens else ""
        return f"tok/s={rate:.0f} batch={stats.running}{cache} eta={eta}"

    def update(self, stats: ProgressStats) -> None:
        self.stats = stats
        now = self.clock()
        if now - self.last >= self.min_interval:  # redraw at most every min_interval, even with nothing finished
            self.last = now
            self._show(refresh=True)

    def done(self, n: int = 1, extra: str | None = None) -> None:
        """``n`` more units finished; ``extra`` (e.g. ``problems=3/8``) is shown before the engine's numbers."""
        if extra is not None:
            self.extra = extra
        self._show(refresh=False)
        if self.bar is not None:
            self.bar.update(n)

    def _show(self, refresh: bool) -> None:
        parts = [self.extra] if self.extra else []
        if self.stats is not None:
            parts.append(self.describe(self.stats))
        self.postfix = " ".join(parts)
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix, refresh=refresh)

    def close(self) -> None:
        self._show(refresh=False)  # the final numbers, even when the last update was throttled
        if self.bar is not None:
            self.bar.close()


@dataclass
class RunCounters:
    """The engine's host-side counts for one ``run`` (updated where it already reads the device)."""

    max_seq_len: int
    samples: int = 0
    budget: int = 0
    finished: int = 0
    finished_tokens: int = 0
    finished_budget: int = 0
    preempted_tokens: int = 0  # tokens of preempted sequences waiting to be recomputed
    live_tokens: int = 0  # tokens of the running, unfinished sequences at the last check
    prefix_hit_tokens: int = 0  # prompt tokens found in the prefix cache
    prefix_tokens: int = 0  # prompt tokens prefilled or found

    def budget_of(self, r) -> int:
        """Tokens one sample of request ``r`` may generate at most."""
        return min(r.params.max_new_tokens, self.max_seq_len - len(r.prompt))

    def add(self, r) -> None:
        """Request ``r`` joins the run (all its samples)."""
        self.samples += r.params.n
        self.budget += self.budget_of(r) * r.params.n

    def finish(self, r, tokens: int) -> None:
        """One sample of ``r`` finished with ``tokens`` generated."""
        self.finished += 1
        self.finished_tokens += tokens
        self.finished_budget += self.budget_of(r)

    def stats(self, running: int) -> ProgressStats:
        in_flight = self.live_tokens + self.preempted_tokens
        return ProgressStats(generated=self.finished_tokens + in_flight, running=running, finished=self.finished,
                             samples=self.samples, budget=self.budget, budget_done=self.finished_budget + in_flight,
                             prefix_hit_tokens=self.prefix_hit_tokens, prefix_tokens=self.prefix_tokens)
