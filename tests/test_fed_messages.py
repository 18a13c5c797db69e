"""The round and update message contract on top of the wire format."""
import numpy as np
import pytest

from broker.fed_messages import (GlobalModel, LocalUpdate, RoundPlan, UpdateEncoding, decode_global, decode_update,
                                 encode_global, encode_update, roundtrip_delta)
from broker.wire import Encoding, Kind, WireError, encode_tensors
from training.federated.aggregator_config import RoundPolicy


def _weights(n_params=4757, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(7, 1, 8), (8,), (5, 8, 16), (16,), (n_params - 56 - 8 - 640 - 16,)]
    return [rng.normal(scale=0.01, size=s).astype(np.float32) for s in sizes]


def test_global_model_roundtrip_with_scaffold_control():
    w = _weights()
    plan = RoundPlan(4, ("p101", "p106"), {"epochs": 2, "learning_rate": 0.3}, "topk:0.1", 4096)
    header, model = decode_global(encode_global("f", GlobalModel(plan, w, [x * 2 for x in w])))
    assert header.round == 4 and model.plan == plan
    for got, want in zip(model.weights + model.server_control, w + [x * 2 for x in w]):
        np.testing.assert_array_equal(got, want)


def test_update_roundtrip_and_metadata_checks():
    w = _weights()
    data = encode_update("f", 3, 101, LocalUpdate(w, 1865, 60, train_loss=0.25), UpdateEncoding.parse("float32"))
    header, update = decode_update(data)
    assert (header.round, header.device_id, update.num_examples, update.local_steps) == (3, 101, 1865, 60)
    assert update.control_delta is None and update.train_loss == 0.25
    bad = encode_tensors(Kind.UPDATE, 1, 3, 101, w, Encoding.FLOAT32, {"n_delta": len(w), "num_examples": 0,
                                                                       "local_steps": 1})
    with pytest.raises(WireError) as err:
        decode_update(bad)
    assert err.value.reason == "bad_meta"


@pytest.mark.parametrize("spec, min_ratio", [("float16", 1.98), ("int8", 3.9), ("topk:0.1", 10.0)])
def test_encodings_shrink_a_model_sized_update(spec, min_ratio):
    w = _weights()
    size = {s: len(encode_update("f", 1, 1, LocalUpdate(w, 10, 1), UpdateEncoding.parse(s)))
            for s in ("float32", spec)}
    assert size["float32"] / size[spec] >= min_ratio


def test_roundtrip_delta_is_what_the_aggregator_decodes():
    w = _weights()
    sent = roundtrip_delta(w, UpdateEncoding.parse("topk:0.1"))
    kept = sum(np.count_nonzero(s) for s in sent)
    assert 0.09 * sum(x.size for x in w) <= kept <= 0.11 * sum(x.size for x in w) + len(w)
    np.testing.assert_array_equal(roundtrip_delta(w, UpdateEncoding.parse("float32"))[4], w[4])


@pytest.mark.parametrize("spec", ["int4", "topk", "topk:0", "topk:2", "float32:1"])
def test_bad_encoding_specs_say_what_to_use(spec):
    with pytest.raises(ValueError, match="float32, float16, int8 or topk"):
        UpdateEncoding.parse(spec)


@pytest.mark.parametrize("kwargs", [{"quorum": 0}, {"late": "later"}, {"selection": "fraction:2"},
                                    {"selection": "some"}, {"deadline_s": 0}])
def test_round_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        RoundPolicy(**kwargs)
