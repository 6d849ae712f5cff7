"""The worker's reply decoder: allow-listed globals only (worker/warm/decode.py)."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import ipaddress
import pickle
import subprocess
import uuid

import pytest

from modelops_runtime.bundles import read_reply_types
from modelops_runtime.errors import BundleError
from modelops_runtime.models import SimResult
from modelops_runtime.worker.warm.decode import RefusedType, decode_reply
from modelops_runtime.worker.warm.runner.frames import PICKLE, encode
from support.bundles import write_bundle


def _roundtrip(obj, declared=frozenset()):
    codec, body = encode(obj)
    return decode_reply(codec, body, declared)


def test_plain_and_allow_listed_values_come_back():
    value = {"set": {1, 2}, "frozen": frozenset({3}), "complex": 1 + 2j,
             "bytes": bytearray(b"ab"), "when": datetime.datetime(2026, 1, 2, 3, 4,
                                                                  tzinfo=datetime.timezone.utc),
             "span": datetime.timedelta(seconds=3), "money": decimal.Decimal("1.10"),
             "ratio": fractions.Fraction(1, 3), "id": uuid.UUID(int=7),
             "ordered": collections.OrderedDict(a=1), "counts": collections.Counter("aab"),
             "queue": collections.deque([1, 2]), "range": range(3),
             "result": SimResult(outputs={"x": 1}, executor="isolated_warm", pid=1,
                                 process_task_count=1, venv_cache_hit=True, duration_s=0.1)}
    assert encode(value)[0] == PICKLE
    assert _roundtrip(value) == value


@pytest.mark.parametrize("payload, named", [
    (subprocess.Popen, "subprocess.Popen"),
    (ipaddress.IPv4Address("127.0.0.1"), "ipaddress.IPv4Address"),
    (pickle.loads, "_pickle.loads"),
])
def test_anything_else_is_refused_naming_it(payload, named):
    with pytest.raises(RefusedType, match=f"the reply holds {named}, a type the worker does "
                                          "not unpickle: declare the class"):
        _roundtrip({"x": payload})


def test_a_bundle_declares_more_classes_but_never_functions_or_system_modules(tmp_path):
    bundle = write_bundle(tmp_path / "b", {"model.py": "", "pyproject.toml": '''
        [tool.modelops]
        reply-types = ["ipaddress.IPv4Address", "subprocess.Popen", "os.getcwd",
                       "ipaddress.ip_address"]
    '''})
    declared = frozenset(read_reply_types(bundle))
    ip = ipaddress.IPv4Address("10.0.0.1")
    assert _roundtrip({"ip": ip}, declared) == {"ip": ip}
    with pytest.raises(RefusedType, match="subprocess.Popen, declared .* never unpickled"):
        _roundtrip({"x": subprocess.Popen}, declared)
    with pytest.raises(RefusedType, match="ipaddress.ip_address, which is not a class"):
        _roundtrip({"x": ipaddress.ip_address}, declared)

    bad = write_bundle(tmp_path / "bad", {"pyproject.toml": "[tool.modelops]\nreply-types = 'x'\n"})
    with pytest.raises(BundleError, match="reply-types must be a list of dotted class names"):
        read_reply_types(bad)
