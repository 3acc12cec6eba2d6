"""db[-1], db[scan_id], db[uid], db.search(...) and scan ids that persist across sessions and processes."""

import subprocess
import sys
import textwrap
import time

import pytest
from bluesky import RunEngine
from bluesky.plans import count, scan
from ophyd.sim import det, motor

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.core.errors import ArgumentError, UserError
from braggscope.storage.runs import AmbiguousRunError, RunNotFound, Runs, load_run_from_text
from braggscope.storage.scan_ids import ScanIdCounter, install_scan_ids, max_scan_id


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """An embedded catalog with four runs: two sessions with persistent scan ids, then an old-style run."""
    tmp = tmp_path_factory.mktemp("db")
    path = tmp / "braggscope.toml"
    path.write_text(textwrap.dedent(f"""
        [storage]
        data_dir = "{tmp / 'data'}"
        catalog_server = "off"
        [detector]
        read_path = "{tmp / 'det'}"
    """))
    cfg = load_config(path)
    client = storage.open_catalog(cfg)
    uids = {}
    for session in ("first", "second"):  # two sessions one after the other: the ids go on
        RE = RunEngine()
        storage.subscribe_writer(RE, client, background=False)
        install_scan_ids(RE, cfg, client)
        uids[session] = RE(count([det], num=2), sample="nmc622")[0]
        if session == "first":
            uids["scan"] = RE(scan([det], motor, -1, 1, 3), sample="lmno_bcdi")[0]
    boundary = time.time()
    time.sleep(0.05)
    old = RunEngine()  # a process of the old days: its scan ids restart at 1
    storage.subscribe_writer(old, client, background=False)
    uids["old"] = old(count([det], num=1))[0]
    return cfg, client, uids, boundary


class _NoWalk:
    """A catalog client that fails when a caller reads every run (``values()`` of the whole catalog)."""

    def __init__(self, client):
        self._client = client

    def values(self):
        raise AssertionError("walked every run of the catalog")

    def __len__(self):  # a count query
        return len(self._client)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_newest_runs_by_one_query_not_a_walk(catalog):
    _, client, uids, _ = catalog
    db = Runs(_NoWalk(client))
    assert db[-1].metadata["start"]["uid"] == uids["old"]
    assert db[-3].metadata["start"]["uid"] == uids["scan"]
    with pytest.raises(RunNotFound, match="only 4 runs"):
        db[-5]
    shown = repr(db).splitlines()
    assert shown[0] == "4 runs" and uids["old"][:8] in shown[1] and uids["first"][:8] in shown[4]
    assert [r.metadata["start"]["uid"] for r in db] == [uids[k] for k in ("old", "second", "scan", "first")]


def test_scan_ids_increase_across_sessions(catalog):
    cfg, client, uids, _ = catalog
    ids = {k: client[u].metadata["start"]["scan_id"] for k, u in uids.items()}
    assert (ids["first"], ids["scan"], ids["second"]) == (1, 2, 3)
    assert ScanIdCounter(cfg.expand_path("storage.data_dir")).last() == 3
    assert max_scan_id(client) == 3


def test_db_index_scan_id_and_uid(catalog):
    _, client, uids, _ = catalog
    db = Runs(client)
    assert len(db) == 4
    assert db[-1].metadata["start"]["uid"] == uids["old"]
    assert db[-2].metadata["start"]["uid"] == uids["second"]
    assert db[3].metadata["start"]["uid"] == uids["second"]
    assert db[uids["scan"]].metadata["start"]["plan_name"] == "scan"
    assert db[uids["scan"][:6]].metadata["start"]["uid"] == uids["scan"]
    with pytest.raises(RunNotFound, match="no run with scan id 99"):
        db[99]
    with pytest.raises(RunNotFound, match="only 4 runs"):
        db[-5]
    with pytest.raises(KeyError):  # still a KeyError for callers that expect one
        db["zzzz"]
    with pytest.raises(ArgumentError, match="a run is named by an int"):
        db[1.5]


def test_a_shared_scan_id_is_refused_with_the_uids(catalog):
    _, client, uids, _ = catalog
    with pytest.raises(AmbiguousRunError) as err:
        Runs(client)[1]  # the old-style run also took scan id 1
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert uids["first"] in message and uids["old"] in message and "scan id 1 names 2 runs" in message
    with pytest.raises(AmbiguousRunError):
        load_run_from_text(client, "1")  # what `braggscope reduce bcdi 1` resolves
    assert load_run_from_text(client, "2").metadata["start"]["uid"] == uids["scan"]
    assert load_run_from_text(client, "-1").metadata["start"]["uid"] == uids["old"]


def test_search_by_plan_sample_and_date(catalog):
    _, client, uids, boundary = catalog
    db = Runs(client)
    assert [r.metadata["start"]["uid"] for r in db.search(plan="count", sample="nmc622")] == \
        [uids["second"], uids["first"]]
    assert [r.metadata["start"]["uid"] for r in db.search(sample="lmno_bcdi")] == [uids["scan"]]
    assert [r.metadata["start"]["uid"] for r in db.search(since=boundary)] == [uids["old"]]
    assert len(db.search(until=boundary)) == 3
    today = time.strftime("%Y-%m-%d")
    assert len(db.search(since=today)) == 4 and len(db.search(until=today)) == 0
    assert len(db.search(plan="count")) == 3 and len(db.search(plan="count").search(sample="nmc622")) == 2
    with pytest.raises(ArgumentError, match="since must be a date"):
        db.search(since="yesterday")
    with pytest.raises(ArgumentError, match="until must be a finite time"):
        db.search(until=float("nan"))
    assert "4 runs" in repr(db) and uids["old"][:8] in repr(db)


COUNTER = """
import sys
from braggscope.storage.scan_ids import ScanIdCounter
counter = ScanIdCounter(sys.argv[1])
print(" ".join(str(counter({})) for _ in range(40)))
"""


def test_scan_ids_unique_across_two_processes_at_once(tmp_path):
    children = [subprocess.Popen([sys.executable, "-c", COUNTER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    got = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        ids = [int(x) for x in out.split()]
        assert ids == sorted(ids)  # each process sees its ids increase
        got += ids
    assert sorted(got) == list(range(1, 81))  # no id handed out twice, none skipped
    assert ScanIdCounter(tmp_path, floor=100)({}) == 101  # never below the catalog's largest id


class RunsRead:
    """Counts the runs (search results) the catalog's answers to a client carry."""

    def __init__(self, client):
        import msgpack

        http = client.context.http_client
        send, self.runs, self.requests = http.send, 0, 0

        def counting(request, *args, **kwargs):
            response = send(request, *args, **kwargs)
            self.requests += 1
            if "msgpack" in (response.headers.get("content-type") or ""):
                data = msgpack.unpackb(response.content).get("data")
                self.runs += len(data) if isinstance(data, list) else 0
            return response

        self._restore = lambda: setattr(http, "send", send)
        http.send = counting


def test_largest_scan_id_is_queried_not_walked(catalog, tmp_path):
    cfg, client, _, _ = catalog
    spy = RunsRead(client)
    try:
        assert max_scan_id(client) == 3
        assert spy.runs == 0 and spy.requests <= 6  # count queries only: no run read
        list(client.values())  # what a walk reads, for contrast
        assert spy.runs >= 4
        spy.runs = spy.requests = 0
        # a new session: one count query (nothing above the persisted counter), then the next id
        RE = RunEngine()
        counter = install_scan_ids(RE, cfg, client)
        assert spy.runs == 0 and spy.requests == 1 and RE.md["scan_id"] == 3
        # a counter file lost (a new data directory on an old catalog): the catalog's largest id is found
        fresh = load_config()
        fresh.set("storage.data_dir", str(tmp_path))
        assert install_scan_ids(RunEngine(), fresh, client).floor == 3 and counter.floor == 0
    finally:
        spy._restore()
