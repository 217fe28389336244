"""Handoff metadata, payloads and shared-memory buffers."""

import os

import numpy as np
import pytest

from llmd_ray.pd import shm
from llmd_ray.pd.config import PDConfig
from llmd_ray.pd.handoff import ExportRequest, KVHandoff, KVPayload, token_digest
from llmd_ray.kv.layout import KVLayout
from llmd_ray.kv.plan import BlockRange

LAYOUT = KVLayout("cpu", 2, 4, 3, "float32", "vec")
PROMPT = list(range(100, 120))  # 20 tokens: 4 transferable blocks of 4


def handoff(first=1, count=3, path=None):
    return KVHandoff("r1", BlockRange(first, count), len(PROMPT), token_digest(PROMPT, (first + count) * 4), LAYOUT,
                     ("layers.0.attn", "layers.1.attn"), path)


def test_params_roundtrip_through_vllm_kv_transfer_params():
    h = handoff(path="/dev/shm/x")
    assert KVHandoff.from_import_params(h.import_params()) == h
    assert KVHandoff.from_export_output({"llmd_export": h.to_dict()}) == h
    assert KVHandoff.from_import_params({"do_remote_prefill": True}) is None
    req = ExportRequest("/p", 2)
    assert ExportRequest.from_params(req.to_params()) == req and ExportRequest.from_params(None) is None
    with pytest.raises(ValueError):
        handoff(path=None).import_params()


def test_digest_binds_blocks_to_their_tokens():
    h = handoff()
    assert h.matches(PROMPT) and h.matches(PROMPT + [1, 2])
    assert not h.matches([7] + PROMPT[1:])
    assert not h.matches(PROMPT[:10])


def test_sizes():
    h = handoff()
    assert h.buffer_shape == (2, 3, 2, 4, 6)
    assert h.nbytes == 2 * 3 * LAYOUT.block_nbytes and h.num_tokens == 12


def test_payload_checks_shape_and_dtype():
    h = handoff()
    KVPayload(h, np.zeros(h.buffer_shape, np.float32))
    with pytest.raises(ValueError):
        KVPayload(h, np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError):
        KVPayload(h, np.zeros(h.buffer_shape, np.float64))


def test_shm_buffers_roundtrip_and_clean_up(tmp_path):
    d = shm.ShmDir("prefill-replica/1", root=str(tmp_path))
    path = d.path_for("req 1", "export")
    assert os.path.dirname(path) == d.root and " " not in os.path.basename(path)
    assert d.path_for("req 1", "export") != path  # unique per call
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    buf = shm.create_buffer(path, "float32", data.shape)
    buf[...] = data
    assert not os.path.exists(path)  # invisible until published
    shm.publish(path, buf)
    np.testing.assert_array_equal(shm.open_buffer(path, "float32", data.shape), data)
    with pytest.raises(ValueError):
        shm.open_buffer(path, "float32", (5, 5))
    np.testing.assert_array_equal(shm.read_buffer(path, "float32", data.shape), data)
    assert not os.path.exists(path)  # read_buffer removes the file
    shm.write_buffer(path, np.empty(0, np.float32))
    assert shm.read_buffer(path, "float32", (0,)).size == 0
    shm.write_buffer(path, data)
    assert d.files() == [os.path.basename(path)]
    assert shm.sweep_stale(str(tmp_path), max_age_s=3600) == 0
    assert shm.sweep_stale(str(tmp_path), max_age_s=-1) == 1
    assert not os.path.exists(d.root)  # the emptied owner directory goes too
    assert os.path.isdir(os.path.dirname(d.path_for("r2", "import")))  # and comes back on use
    d.remove()
    assert d.files() == []


def test_transfer_configs_select_the_connector():
    obj = PDConfig().kv_transfer_config("cpu", "prefill")
    assert obj == PDConfig().kv_transfer_config("cpu", "decode")
    assert obj["kv_connector"] == "ShmConnector" and obj["kv_role"] == "kv_both"
    assert obj["kv_connector_module_path"] == "llmd_ray.pd.connector"
    assert obj["kv_load_failure_policy"] == "recompute"
    nixl = PDConfig(transport="nixl").kv_transfer_config("cpu", "prefill")
    assert nixl["kv_connector"] == "NixlConnector" and nixl["kv_buffer_device"] == "cpu"
    assert nixl["kv_role"] == "kv_producer" and nixl["kv_load_failure_policy"] == "recompute"
    gpu = PDConfig(transport="nixl").kv_transfer_config("gpu", "decode")
    assert gpu["kv_buffer_device"] == "cuda" and gpu["kv_role"] == "kv_consumer"
    with pytest.raises(ValueError):
        PDConfig(transport="tcp")
