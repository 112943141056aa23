"""Race for daily-limit places from a separate OS process (the multi-process limit tests).

    python -m tests.reserve_worker URL OWNER LIMIT DAY_START THREADS

Opens one store (as an app process does), prints "ready", waits for a line on stdin (so
several workers start together), then THREADS threads each try to reserve one place at
the same moment, printing "reserved <id>" or "refused" for each.
"""

from __future__ import annotations

import sys

from testkit.child import race_threads


def main() -> None:
    url, owner = sys.argv[1], sys.argv[2]
    limit, day_start, threads = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    from core import history, limits

    store = history.HistoryStore(url=url, repair=False)

    def race(_n: int) -> str:
        try:
            return f"reserved {store.reserve(owner, 1, limit, day_start).id}"
        except limits.LimitReached:
            return "refused"

    race_threads(race, threads)


if __name__ == "__main__":
    main()
