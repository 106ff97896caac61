"""Sharded agents (``--shard I/N``): a stable split of the repositories, and passes, records and delete
checks scoped to one shard."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from backends.memory import MemoryBackend
from syncagent.cli import main
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import Digest, TagIndexLink, key_of
from syncagent.sync.records import RECORDS_PREFIX, STALE_AFTER, read_records
from syncagent.sync.shard import InvalidShard, Shard, shard_of
from syncagent.testing.synthetic import TreeShape, write_tree
from syncagent.check.compare import compare
from syncagent.sync.report import Report


def everything(backend) -> dict[str, bytes]:
    return {info.key: backend.read_bytes(info.key) for info in backend.iter_objects("docker/")}


@pytest.fixture
def source():
    return MemoryBackend()


@pytest.fixture
def tree(source):
    return write_tree(source, TreeShape(repositories=9, tags_per_repository=2, index_every=2, layer_bytes=(100, 800)))


def test_the_rule_is_the_documented_hash_and_every_repository_has_exactly_one_shard():
    names = [f"team{n % 4}/app{n}" for n in range(200)]
    for count in (1, 2, 3, 7):
        for name in names:
            documented = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count
            assert shard_of(name, count) == documented
            assert [Shard(i, count).owns(name) for i in range(count)].count(True) == 1
    assert len({shard_of(name, 3) for name in names}) == 3  # the names spread over every shard


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1", "a/b", "0/0", "1/2/3", ""])
def test_a_shard_that_is_not_i_of_n_is_refused(text):
    with pytest.raises(InvalidShard):
        Shard.parse(text)


def test_prune_blobs_is_refused_with_a_shard():
    with pytest.raises(ValueError, match="prune-blobs"):
        SyncOptions(delete=True, prune_blobs=True, shard=Shard(0, 2))


def test_three_shards_together_write_what_one_unsharded_pass_writes(source, tree):
    whole, sharded = MemoryBackend(), MemoryBackend()
    assert Engine(source, whole, SyncOptions()).run().ok
    repositories = []
    for index in range(3):
        report = Engine(source, sharded, SyncOptions(shard=Shard(index, 3))).run()
        assert report.ok
        repositories.append(report.counters["repositories"])
    assert sum(repositories) == len(tree.repositories) and all(repositories)
    assert everything(sharded) == everything(whole)
    assert not compare(source, sharded, Report()).differs


def test_a_shard_syncs_only_its_own_repositories(source, tree):
    dest = MemoryBackend()
    shard = Shard(1, 3)
    assert Engine(source, dest, SyncOptions(shard=shard)).run().ok
    synced = {key.split("/repositories/")[1].split("/_")[0] for key in everything(dest) if "/repositories/" in key}
    assert synced == {name for name in tree.repositories if shard.owns(name)}


def plant_record(dest, shard: str | None) -> str:
    key = RECORDS_PREFIX + f"dead-{(shard or 'all').replace('/', '-')}.json"
    age = STALE_AFTER + 60
    content = {"scope": ["*"], "host": "another-host", "boot": "b", "pidns": "1", "pid": 1, "start": "1",
               "started": time.time() - age, "renewed": time.time() - age}
    if shard is not None:
        content["shard"] = shard
    MemoryBackend.put(dest, key, io.BytesIO(json.dumps(content).encode()))
    return key


def test_a_shards_record_covers_exactly_its_shard(source, tree):
    """A dead pass of shard 0 left history links unwritten: shard 1 neither checks its repositories
    nor deletes its record; shard 0's next pass writes them and deletes the record."""
    dest = MemoryBackend()
    assert Engine(source, dest, SyncOptions()).run().ok
    zero, one = Shard(0, 3), Shard(1, 3)
    lost = [key_of(TagIndexLink(repository, tag, Digest.parse(digest)))
            for repository, tags in tree.tags.items() if zero.owns(repository) for tag, digest in tags.items()]
    for key in lost:
        dest.delete(key)
    record = plant_record(dest, "0/3")
    assert [(r.scope, r.shard) for r in read_records(dest)] == [(("*",), zero)]
    other = Engine(source, dest, SyncOptions(shard=one)).run()
    assert other.ok and other.counters["history_repaired"] == 0
    assert dest.exists(record)
    own = Engine(source, dest, SyncOptions(shard=zero)).run()
    assert own.ok and own.counters["history_repaired"] == len(lost) > 0
    assert not dest.exists(record) and all(dest.exists(key) for key in lost)


def test_a_sharded_pass_checks_an_unsharded_record_but_leaves_it_to_an_unsharded_pass(source, tree):
    dest = MemoryBackend()
    assert Engine(source, dest, SyncOptions()).run().ok
    record = plant_record(dest, None)
    assert Engine(source, dest, SyncOptions(shard=Shard(2, 3))).run().ok
    assert dest.exists(record)  # it covered the other shards' repositories too
    assert Engine(source, dest, SyncOptions()).run().ok
    assert not dest.exists(record)


def test_a_sharded_pass_records_its_shard(source, tree, monkeypatch):
    dest = MemoryBackend()
    written = []
    original = MemoryBackend.put

    def put(self, key, data, **kwargs):
        info = original(self, key, data, **kwargs)
        if key.startswith(RECORDS_PREFIX):
            written.append(json.loads(self.read_bytes(key)))
        return info

    monkeypatch.setattr(MemoryBackend, "put", put)
    assert Engine(source, dest, SyncOptions(shard=Shard(1, 3))).run().ok
    assert written and {w["shard"] for w in written} == {"1/3"}


def test_the_delete_checks_are_scoped_to_the_shard(source, tree):
    """The source lost every repository of shard 0 (and kept the others'): a delete pass of shard 0
    is refused as one over an emptied source, whatever --max-delete allows."""
    dest = MemoryBackend()
    assert Engine(source, dest, SyncOptions()).run().ok
    zero = Shard(0, 3)
    for info in list(source.iter_objects("docker/registry/v2/repositories/")):
        name = info.key.split("/repositories/")[1].split("/_")[0]
        if zero.owns(name):
            source.delete(info.key)
    before = everything(dest)
    report = Engine(source, dest, SyncOptions(delete=True, max_delete_share=1.0, shard=zero)).run()
    refusals = [p.reason for p in report.problems if p.kind == "delete-refused"]
    assert refusals and "in this pass's scope" in refusals[0]
    assert everything(dest) == before
    other = Engine(source, dest, SyncOptions(delete=True, max_delete_share=1.0, shard=Shard(1, 3))).run()
    assert other.ok and everything(dest) == before  # nothing of shard 1 is gone from the source


def test_the_command_line_refuses_prune_blobs_with_a_shard_and_a_bad_shard(tmp_path, capsys):
    source = tmp_path / "src"
    write_tree(open_fs(source), TreeShape(repositories=1, tags_per_repository=1))
    assert main(["sync", str(source), str(tmp_path / "dst"), "--delete", "--prune-blobs", "--shard", "0/2"]) == 2
    assert "--prune-blobs does not go with --shard" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["sync", str(source), str(tmp_path / "dst"), "--shard", "2/2"])
    assert exited.value.code == 2
    assert "numbered from 0" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def test_verify_with_a_shard_looks_at_its_repositories_only(source, tree, tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(open_fs(src), TreeShape(repositories=6, tags_per_repository=1))
    assert main(["sync", str(src), str(dst), "--shard", "0/2", "--json"]) == 0
    capsys.readouterr()
    assert main(["verify", str(src), "--against", str(dst), "--shard", "0/2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["comparison"]["differs"] is False
    assert main(["verify", str(src), "--against", str(dst), "--json"]) == 1  # shard 1 was never synced


def open_fs(path):
    from backends import open_backend

    return open_backend(f"file://{path}")


def test_the_sidecar_takes_its_shard_from_the_environment_and_refuses_a_bad_one():
    from syncagent.sidecar.config import ConfigError, load_config

    base = {"SYNCAGENT_SOURCE": "/src", "SYNCAGENT_DESTINATION": "/dst", "SYNCAGENT_NOTIFICATIONS": "false"}
    assert load_config(None, {**base, "SYNCAGENT_SHARD": "2/3"}).shard == Shard(2, 3)
    assert load_config(None, base).shard is None
    with pytest.raises(ConfigError, match="SYNCAGENT_SHARD"):
        load_config(None, {**base, "SYNCAGENT_SHARD": "3/3"})
