"""Child scripts that run a warm executor under a seccomp profile stricter than the pods'
(a test's own filter installed first): the shared prelude and executor set-up.

- covers: ``PRELUDE`` (``install_filter(prog)``: classic-BPF instructions as
  (code, jt, jf, k), with no new privileges) and ``EXECUTOR`` (an ``IsolatedWarmExecEnv``
  ``ex`` from the JSON environment in ``sys.argv[1]``, the runtime's log messages in
  ``records``); a test appends what it runs and prints.
- does not: decide what the filter refuses (each test's own program).
- see also: tests/runtime/test_template_fork.py, tests/runtime/test_task_tree.py.
"""

PRELUDE = r'''
import ctypes, json, logging, os, sys

libc = ctypes.CDLL(None, use_errno=True)
SECCOMP_NR = {"x86_64": 317, "aarch64": 277}[os.uname().machine]


def install_filter(prog):
    insns = (ctypes.c_uint64 * len(prog))(*(c | jt << 16 | jf << 24 | k << 32
                                            for c, jt, jf, k in prog))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.syscall(SECCOMP_NR, 1, 0,  # SECCOMP_SET_MODE_FILTER
                        ctypes.byref(Prog(len(prog), ctypes.addressof(insns)))) == 0
'''

EXECUTOR = r'''
from modelops_runtime.bundles import BundleStore
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.models import Call
from modelops_runtime.worker.executors.warm import IsolatedWarmExecEnv

records = []
handler = logging.Handler()
handler.emit = lambda record: records.append(record.getMessage())
logging.getLogger("modelops_runtime").addHandler(handler)
config = RuntimeConfig.from_env(json.loads(sys.argv[1]))
ex = IsolatedWarmExecEnv(config, BundleStore(config))
'''
