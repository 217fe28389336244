import pytest

from llmd_ray.engine.cpu import cores_for_rank, cpu_bind_value


@pytest.mark.parametrize(
    "rank,k,cpus,expected",
    [
        (0, 1, [0, 1], [0]),
        (1, 1, [0, 1], [1]),
        (2, 1, [0, 1], [0]),  # more replicas than cores: wrap round
        (1, 2, [0, 1, 2, 3], [2, 3]),
        (1, 2, [4, 5, 6], [6, 4]),  # non-contiguous affinity masks, wrapping inside a slice
        (0, 8, [0, 1], [0, 1]),  # never more cores than exist
    ],
)
def test_cores_for_rank(rank, k, cpus, expected):
    assert cores_for_rank(rank, k, cpus) == expected


def test_distinct_cores_for_each_replica_when_they_fit():
    cpus = list(range(8))
    seen = [c for r in range(4) for c in cores_for_rank(r, 2, cpus)]
    assert sorted(seen) == cpus


@pytest.mark.parametrize("rank,k,cpus", [(-1, 1, [0]), (0, 0, [0]), (0, 1, [])])
def test_invalid_inputs(rank, k, cpus):
    with pytest.raises(ValueError):
        cores_for_rank(rank, k, cpus)


def test_bind_value():
    assert cpu_bind_value("auto", 1, 1, [0, 1]) == "1"
    assert cpu_bind_value("auto", 0, 2, [0, 1, 2, 3]) == "0,1"
    assert cpu_bind_value("auto", None, 1, [0, 1]) == "auto"  # outside a replica: vLLM decides
    assert cpu_bind_value("nobind", 3, 1, [0, 1]) == "nobind"
    assert cpu_bind_value("2-3", 0, 1, [0, 1]) == "2-3"


def test_choose_cores_takes_the_ranks_cores_when_free_else_a_free_window():
    from llmd_ray.engine.cpu import choose_cores

    cpus = [0, 1, 2, 3]
    assert choose_cores(2, 1, cpus, taken=set()) == [2]  # free: the rank's, as on one host
    assert choose_cores(2, 1, cpus, taken={2}) == [3]
    assert choose_cores(0, 2, cpus, taken={1}) == [2, 3]  # windows of the replica's width first
    assert choose_cores(0, 2, cpus, taken={0, 3}) == [1, 2]  # then any start
    assert choose_cores(1, 2, cpus, taken={0, 1, 2, 3}) == [2, 3]  # all claimed: the rank's, shared
    assert choose_cores(4, 1, [4, 6], taken={4}) == [6]  # cores by value, not index


def test_claims_are_per_node_and_released_with_the_claimer(tmp_path):
    """Ranks 0 and 2 of an app on one 2-core node (the others on another host) must not share core 0."""
    from llmd_ray.engine.cpu import claim_cores

    node, other_node = str(tmp_path / "node"), str(tmp_path / "other")  # each node's own /dev/shm
    a = claim_cores(0, 1, [0, 1], root=node)
    b = claim_cores(2, 1, [0, 1], root=node)
    assert (a.cores, b.cores) == ([0], [1])
    assert claim_cores(0, 1, [0, 1], root=other_node).cores == [0]  # another node's claims are its own
    full = claim_cores(0, 1, [0, 1], root=node)  # every core claimed: the rank's, shared, nothing held
    assert (full.cores, full.fds) == ([0], [])
    a.release()
    c = claim_cores(2, 1, [0, 1], root=node)  # core 0 free again (a replica gone: its claim goes with it)
    assert c.cores == [0]
    for claim in (b, c):
        claim.release()


def test_bind_replica_claims_only_auto_in_a_replica(tmp_path, monkeypatch):
    from llmd_ray.engine import cpu

    monkeypatch.setattr(cpu, "allowed_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpu, "shm_dir", lambda name: str(tmp_path / name))
    assert cpu.bind_replica("2-3", 0, 1) == ("2-3", None)
    assert cpu.bind_replica("auto", None, 1) == ("auto", None)
    bind, claim = cpu.bind_replica("auto", 1, 1)
    assert bind == "1" and claim.fds
    bind2, claim2 = cpu.bind_replica("auto", 1, 1)
    assert bind2 == "0"
    claim.release()
    claim2.release()
