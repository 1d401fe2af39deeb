"""The demo's world, one for every command: the offline market ``make demo`` fetched from (its symbols, seed
and splits), recorded by the demo in ``<CONDVEST_HOME>/offline-world.json`` and read back by ``make lab``,
``make shell`` and ``python -m condvest.offline serve``, so a session fetched from any of them continues the
lake's prices (a market without the demo's splits would serve a split symbol on another price basis).

Before any demo ran, the world is planned for today, as the demo would plan it: 50 symbols, seed 7, a 2-for-1
and a 1-for-10 reverse split inside the last 30 sessions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from condvest.calendar import last_n_sessions, latest_complete_session, previous_session
from condvest.offline.market import Split, SyntheticMarket
from condvest.settings import Settings

__all__ = ["DEMO_SEED", "DEMO_SYMBOLS", "WORLD_FILE", "World", "demo_splits", "load_world", "plan_dates", "world_for"]

#: the demo's market: 50 symbols, seed 7
DEMO_SYMBOLS = 50
DEMO_SEED = 7
WORLD_FILE = "offline-world.json"


def plan_dates(today: dt.date) -> tuple[dt.date, dt.date, dt.date]:
    """(last DMS session, backfill start, backfill end): the export, the backfill and the daily window abut."""
    backfill_end = last_n_sessions(latest_complete_session(today), 31)[0]  # just before the daily window
    history_start = Settings().retention.cutoff(backfill_end)
    return previous_session(history_start), history_start, backfill_end


def demo_splits(today: dt.date, n_symbols: int, seed: int = DEMO_SEED) -> list[Split]:
    """A 2-for-1 and a 1-for-10 reverse split inside the daily window, of two symbols listed before the export
    ends (so their history spans the DMS export, the backfill and the daily files)."""
    window = last_n_sessions(latest_complete_session(today), 30)
    market = SyntheticMarket(n_symbols, seed)
    old = [s for s in market.symbols if market.listing_date(s) < plan_dates(today)[0]]
    if len(old) < 2:
        return []
    return [Split(old[0], window[10], 1, 2), Split(old[1], window[20], 10, 1)]


@dataclass(frozen=True)
class World:
    """The offline market's definition: ``n_symbols`` tickers of ``seed`` with ``splits``, planned on ``planned``."""

    n_symbols: int
    seed: int
    splits: tuple[Split, ...]
    planned: dt.date

    @classmethod
    def plan(cls, today: dt.date, n_symbols: int = DEMO_SYMBOLS, seed: int = DEMO_SEED) -> World:
        """The world the demo builds when it runs on ``today``."""
        return cls(n_symbols, seed, tuple(demo_splits(today, n_symbols, seed)), today)

    def market(self) -> SyntheticMarket:
        return SyntheticMarket(self.n_symbols, self.seed, splits=self.splits)

    def describe(self) -> str:
        splits = ", ".join(f"{s.symbol} {s.split_from:g}:{s.split_to:g} on {s.execution_date}" for s in self.splits)
        return f"{self.n_symbols} symbols, seed {self.seed}, splits: {splits or 'none'}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "n_symbols": self.n_symbols,
                "seed": self.seed,
                "planned": self.planned.isoformat(),
                "splits": [
                    {
                        "symbol": s.symbol,
                        "execution_date": s.execution_date.isoformat(),
                        "split_from": s.split_from,
                        "split_to": s.split_to,
                    }
                    for s in self.splits
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> World:
        d = json.loads(text)
        splits = tuple(
            Split(s["symbol"], dt.date.fromisoformat(s["execution_date"]), s["split_from"], s["split_to"])
            for s in d["splits"]
        )
        return cls(int(d["n_symbols"]), int(d["seed"]), splits, dt.date.fromisoformat(d["planned"]))

    def save(self, home: Path) -> Path:
        """Record this world under ``home`` (the demo does, before its first fetch)."""
        home.mkdir(parents=True, exist_ok=True)
        path = home / WORLD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path


def load_world(home: Path) -> World | None:
    """The world the last demo recorded under ``home``, or ``None``."""
    path = home / WORLD_FILE
    return World.from_json(path.read_text()) if path.is_file() else None


def world_for(home: Path, today: dt.date, n_symbols: int | None = None, seed: int | None = None) -> World:
    """The demo's recorded world under ``home``; else (no demo yet, or other symbols/seed asked for) the one the
    demo would plan today."""
    saved = load_world(home)
    if saved is not None and n_symbols in (None, saved.n_symbols) and seed in (None, saved.seed):
        return saved
    return World.plan(today, n_symbols or DEMO_SYMBOLS, DEMO_SEED if seed is None else seed)
