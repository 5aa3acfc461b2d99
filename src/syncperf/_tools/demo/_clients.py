"""Simulated offline-first clients driving the demo service over real HTTP (httpx).

Each client loops: pull an entity, push a few edits, think. Now and then it goes offline,
keeps editing locally, and comes back with one batch per entity (stale versions: conflicts).
Every client edits the same hot records, so concurrent edits collide. Some pushes lose their
response and are retried with the same ``Idempotency-Key`` (the service replays them); a few
carry an invalid change (the service answers 500); a few pulls are full snapshots (one slow
query). The ``Tally`` counts what the service answered, per operation and entity, so the
demo can check syncperf's numbers against it.

Clients also report on themselves, as a real app would: every sync request carries a
``Sync-Client`` header (changes waiting on the device, retries, seconds since the last good
sync, app version), every pull after the first sends back the previous pull's ``timestamp``
as its checkpoint, and each client keeps its own measurement of every sync (duration and
outcome as it saw them, failed attempts while offline included) and posts them in batches to
the client metrics endpoint; some batch responses are lost and the batch is resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from syncperf._tools.demo._schema import ENTITIES, HOT_RECORDS, N_PLUS_ONE_ENTITY
from syncperf._tools.demo._service import CLIENT_METRICS

N_PLUS_ONE_THRESHOLD = 10
"""syncperf.sqlalchemy's default: a statement executed this often in one operation is an N+1."""
APP_VERSIONS = ("2.4.1", "2.5.0")
"""The app versions the simulated clients run (the ``app`` member of their header)."""
MAX_STORED = 500
"""Measurements a client keeps while it cannot post them (the oldest are dropped)."""


@dataclass
class Behaviour:
    """Probabilities and sizes of the simulated traffic."""

    offline: float = 0.04
    """Chance per round that a client goes offline."""
    offline_seconds: tuple[float, float] = (1.0, 3.0)
    offline_edits: tuple[int, int] = (4, 25)
    lost_response: float = 0.06
    """Chance that a push's response is lost and the push is retried with the same key."""
    invalid: float = 0.015
    """Chance that a push carries a change the database rejects (answered 500)."""
    snapshot: float = 0.015
    """Chance that a pull is a full snapshot (one deliberately slow query)."""
    think: tuple[float, float] = (0.15, 0.6)
    """Seconds between two rounds of one client."""
    offline_attempts: tuple[int, int] = (1, 3)
    """Sync attempts that fail while a client is offline (measured, posted later)."""
    flush_rounds: int = 4
    """Online rounds between two posts of a client's stored measurements."""


@dataclass
class Counts:
    """What the service answered for one (operation, entity)."""

    requests: int = 0
    server_errors: int = 0
    replayed: int = 0
    conflicts: int = 0
    conflicted: int = 0
    created: int = 0
    updated: int = 0
    items: int = 0
    n_plus_one: int = 0
    snapshots: int = 0
    reported_pending: int = 0
    """Sum of the ``pending`` the clients reported in their ``Sync-Client`` headers."""
    checkpoints: int = 0
    """Pulls that sent the previous pull's timestamp as their checkpoint."""
    latencies: list[float] = field(default_factory=list, repr=False)


@dataclass
class Tally:
    """The simulator's own count of the traffic it drove and what came back."""

    counts: dict[tuple[str, str], Counts] = field(default_factory=dict)
    idempotent_retries: int = 0
    invalid_pushes: int = 0
    offline_batches: int = 0
    transport_errors: int = 0
    clients: int = 0
    client_records: int = 0
    """Client-side measurements the client metrics endpoint accepted."""
    client_errors: int = 0
    """Of those, syncs the clients saw fail (offline attempts, 5xx)."""
    client_batches: int = 0
    resent_batches: int = 0
    """Batches posted again because their response was lost (the endpoint dedupes them)."""

    def of(self, operation: str, entity: str) -> Counts:
        """The counts of one (operation, entity), created on first use."""
        found = self.counts.get((operation, entity))
        if found is None:
            found = self.counts[(operation, entity)] = Counts()
        return found

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts (latencies left out)."""
        per = {
            f"{op} {entity}": {k: v for k, v in vars(c).items() if k != "latencies"}
            for (op, entity), c in sorted(self.counts.items())
        }
        return {
            "clients": self.clients,
            "idempotent_retries": self.idempotent_retries,
            "invalid_pushes": self.invalid_pushes,
            "offline_batches": self.offline_batches,
            "transport_errors": self.transport_errors,
            "client_records": self.client_records,
            "client_errors": self.client_errors,
            "client_batches": self.client_batches,
            "resent_batches": self.resent_batches,
            "by_operation": per,
        }


class Client:
    """One simulated device: a cursor and known versions per entity, online or offline."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        tally: Tally,
        rng: random.Random,
        behaviour: Behaviour,
        stop: asyncio.Event,
    ) -> None:
        self.http = client
        self.tally = tally
        self.rng = rng
        self.b = behaviour
        self.stop = stop
        self.cursor = dict.fromkeys(ENTITIES, 0)
        self.versions: dict[str, dict[str, int]] = {
            e: {f"{e}-{i}": 1 for i in range(HOT_RECORDS)} for e in ENTITIES
        }
        self.mine: dict[str, deque[str]] = {e: deque(maxlen=20) for e in ENTITIES}
        self.prefix = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
        self.serial = 0
        self.app = rng.choice(APP_VERSIONS)
        self.pulled_at: dict[str, int] = {}
        """The ``timestamp`` of the last pull per entity: the next pull's checkpoint."""
        self.unpushed = 0
        """Local changes not pushed yet (the header's ``pending``)."""
        self.failed = 0
        """Failed attempts since the last successful sync (the header's ``retries``)."""
        self.last_ok: float | None = None
        self.stored: list[dict[str, Any]] = []
        """This client's own measurements, waiting to be posted."""
        self.rounds = 0
        self.seconds = 0.0
        """Duration of the last request, as this client measured it."""

    async def run(self) -> None:
        """Sync until ``stop`` is set (a request in flight is always completed)."""
        await self._pause(self.rng.uniform(0, self.b.think[1]))
        while not self.stop.is_set():
            if self.rng.random() < self.b.offline:
                await self._offline_round()
                await self.flush()  # back online: post what was measured meanwhile
            else:
                await self._online_round()
                self.rounds += 1
                if self.rounds % self.b.flush_rounds == 0:
                    await self.flush()
            await self._pause(self.rng.uniform(*self.b.think))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _online_round(self) -> None:
        entity = self.rng.choice(ENTITIES)
        await self.pull(entity, snapshot=self.rng.random() < self.b.snapshot)
        if self.stop.is_set():
            return
        target = self.rng.choice(ENTITIES)
        edits = [self._edit(target) for _ in range(self.rng.randint(1, 3))]
        self.unpushed += len(edits)
        await self.push(target, edits)

    async def _offline_round(self) -> None:
        pending: dict[str, list[dict[str, Any]]] = {}
        for _ in range(self.rng.randint(*self.b.offline_edits)):
            entity = self.rng.choice(ENTITIES)
            pending.setdefault(entity, []).append(self._edit(entity))
            self.unpushed += 1
        offline = self.rng.uniform(*self.b.offline_seconds)
        for _ in range(self.rng.randint(*self.b.offline_attempts)):  # no network: they fail
            self.failed += 1
            self._measured("push", self.rng.choice(ENTITIES), offline / 2, "error")
        await self._pause(offline)
        for entity, edits in pending.items():  # back online: one batch per entity
            if self.stop.is_set():
                return
            self.tally.offline_batches += 1
            await self.push(entity, edits)
        for entity in pending:
            if self.stop.is_set():
                return
            await self.pull(entity)

    def _edit(self, entity: str) -> dict[str, Any]:
        """A change: update a hot or own record at its known version, or create one."""
        roll = self.rng.random()
        known = self.versions[entity]
        if roll < 0.55:
            record_id = f"{entity}-{self.rng.randrange(HOT_RECORDS)}"
        elif roll < 0.75 and self.mine[entity]:
            record_id = self.rng.choice(self.mine[entity])
        else:
            self.serial += 1
            record_id = f"{self.prefix}-{self.serial}"
            return {"id": record_id, "base_version": 0, "title": f"new {entity}", "done": False}
        return {
            "id": record_id,
            "base_version": known.get(record_id, 1),
            "title": f"edit {self.serial}",
            "done": self.rng.random() < 0.5,
        }

    async def pull(self, entity: str, *, snapshot: bool = False) -> None:
        """Pull ``entity`` from the client's cursor and learn the versions it returns."""
        params: dict[str, Any] = {"cursor": self.cursor[entity]}
        if snapshot:
            params["snapshot"] = "true"
        checkpoint = self.pulled_at.get(entity)
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        response = await self._send("pull", entity, "GET", f"/sync/{entity}/pull", params=params)
        if response is None:
            return
        counts = self.tally.of("pull", entity)
        counts.checkpoints += checkpoint is not None
        if snapshot:
            counts.snapshots += 1
        if response.status_code >= 500:
            counts.server_errors += 1
            self._measured("pull", entity, self.seconds, "error")
            return
        body = response.json()
        self.pulled_at[entity] = body["timestamp"]
        self._measured("pull", entity, self.seconds, "success")
        pulled = body["changes"]
        counts.items += len(pulled)
        if entity == N_PLUS_ONE_ENTITY and len(pulled) >= N_PLUS_ONE_THRESHOLD:
            counts.n_plus_one += 1
        known = self.versions[entity]
        for change in pulled:
            if change["id"] in known:
                known[change["id"]] = change["version"]
        self.cursor[entity] = body["cursor"]

    async def push(self, entity: str, edits: list[dict[str, Any]]) -> None:
        """Push ``edits``; maybe lose the response and retry with the same key."""
        if self.rng.random() < self.b.invalid:
            edits = [*edits, {"id": f"{self.prefix}-bad", "base_version": 0, "title": None}]
            self.tally.invalid_pushes += 1
        key = uuid.UUID(int=self.rng.getrandbits(128)).hex
        headers = {"Idempotency-Key": key}
        payload = {"changes": edits}
        response = await self._send(
            "push", entity, "POST", f"/sync/{entity}/push", json=payload, headers=headers
        )
        if response is None:
            return
        self._account(entity, edits, response)
        if response.status_code < 500 and self.rng.random() < self.b.lost_response:
            # the response never reached the device: it retries the same push, same key
            self.tally.idempotent_retries += 1
            self._measured("push", entity, self.seconds, "error")
            self.failed += 1
            retry = await self._send(
                "push", entity, "POST", f"/sync/{entity}/push", json=payload, headers=headers
            )
            if retry is not None:
                self._account(entity, edits, retry)
        self.unpushed = max(0, self.unpushed - len(edits))  # pushed: applied or conflicted

    def _account(self, entity: str, edits: list[dict[str, Any]], response: httpx.Response) -> None:
        counts = self.tally.of("push", entity)
        if response.status_code >= 500:
            counts.server_errors += 1
            self._measured("push", entity, self.seconds, "error")
            return
        if response.headers.get("idempotent-replayed") == "true":
            counts.replayed += 1  # the service applied nothing this time
            self._measured("push", entity, self.seconds, "success")
            return
        body = response.json()
        applied: list[dict[str, Any]] = body["applied"]
        conflicts: list[dict[str, Any]] = body["conflicts"]
        self._measured("push", entity, self.seconds, "conflict" if conflicts else "success")
        counts.conflicts += len(conflicts)
        counts.conflicted += bool(conflicts)
        known = self.versions[entity]
        for change in applied:
            if change["kind"] == "created":
                counts.created += 1
                self.mine[entity].append(change["id"])
            else:
                counts.updated += 1
            known[change["id"]] = change["version"]
        for conflict in conflicts:  # server wins: take its version for the next edit
            if conflict["server_version"] is not None and conflict["id"] in known:
                known[conflict["id"]] = conflict["server_version"]
        own = set(self.mine[entity])
        for record_id in [r for r in known if r not in own and not r.startswith(entity)]:
            del known[record_id]  # keep the client's state bounded

    def _health(self, now: float) -> str:
        """The ``Sync-Client`` header: this client's own numbers (RFC 8941 dictionary)."""
        members = [f"pending={self.unpushed}", f"retries={self.failed}"]
        if self.last_ok is not None:
            members.append(f"last-sync-age={int(now - self.last_ok)}")
        members.append(f'app="{self.app}"')
        return ", ".join(members)

    def _measured(self, operation: str, entity: str, seconds: float, outcome: str) -> None:
        """Keep one of this client's own measurements until the next post."""
        if len(self.stored) >= MAX_STORED:
            del self.stored[0]
        record = {"operation": operation, "entity": entity, "duration": seconds}
        self.stored.append({**record, "outcome": outcome})

    async def _send(
        self, operation: str, entity: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        headers = {**kwargs.pop("headers", {}), "Sync-Client": self._health(start)}
        try:
            response = await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError:
            self.tally.transport_errors += 1
            return None
        self.seconds = loop.time() - start
        counts = self.tally.of(operation, entity)
        counts.requests += 1
        counts.reported_pending += self.unpushed
        if len(counts.latencies) < 100_000:
            counts.latencies.append(self.seconds)
        if response.status_code < 500:
            self.last_ok = loop.time()
            self.failed = 0
        return response

    async def flush(self) -> None:
        """Post the stored measurements as one batch; resend it when the answer is lost."""
        if not self.stored:
            return
        records, self.stored = self.stored[:100], self.stored[100:]
        batch = {
            "batch": uuid.UUID(int=self.rng.getrandbits(128)).hex,
            "app": self.app,
            "records": records,
        }
        headers = {"Sync-Client-Id": self.prefix}
        lose = self.rng.random() < self.b.lost_response
        for attempt in range(2 if lose else 1):
            try:
                response = await self.http.post(CLIENT_METRICS + "/", json=batch, headers=headers)
            except httpx.HTTPError:
                self.tally.transport_errors += 1
                self.stored[:0] = records
                return
            if response.status_code != 202:  # rate-limited or not mounted: keep them
                self.stored[:0] = records[: MAX_STORED - len(self.stored)]
                return
            answer = response.json()
            if attempt == 0:
                self.tally.client_batches += 1
                self.tally.client_records += answer["accepted"]
                self.tally.client_errors += sum(r["outcome"] == "error" for r in records)
            else:
                self.tally.resent_batches += answer.get("duplicate", False)


async def drive(
    base_url: str,
    clients: int,
    stop: asyncio.Event,
    *,
    seed: int = 0,
    behaviour: Behaviour | None = None,
    tally: Tally | None = None,
    max_connections: int = 100,
) -> Tally:
    """Run ``clients`` simulated clients against ``base_url`` until ``stop`` is set.

    In-flight requests complete before this returns, so the tally matches what the service
    processed. Cancelling the task abandons them instead.
    """
    tally = tally if tally is not None else Tally()
    tally.clients = clients
    rng = random.Random(seed)
    n = max_connections  # idle ones closed before uvicorn's 5 s keep-alive closes them:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=2.0)
    timeout = httpx.Timeout(120.0, connect=30.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        sims = [
            Client(http, tally, random.Random(rng.getrandbits(64)), behaviour or Behaviour(), stop)
            for _ in range(clients)
        ]
        await asyncio.gather(*(sim.run() for sim in sims))
    return tally
