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
