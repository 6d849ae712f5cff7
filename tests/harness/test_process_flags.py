"""Process-wide flags set during a test are cleared after it (support/flags.py): the
child-subreaper flag an in-process warm pool sets (``become_subreaper``) does not outlive
the test, so pytest adopts no later test's orphans."""

from __future__ import annotations

import sys

import pytest

from support.flags import set_subreaper, subreaper

INNER = """
from modelops_runtime.worker.warm.orphans import become_subreaper
from support.flags import subreaper

def test_a_warm_pool_makes_this_process_a_subreaper():
    assert become_subreaper() and subreaper()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the child-subreaper flag is Linux's (prctl)")


def test_the_subreaper_flag_is_cleared_after_the_test_that_set_it(pytester):
    assert subreaper() is False, "this test started as a subreaper: an earlier test leaked it"
    pytester.makepyfile(test_inner=INNER)
    pytester.makeconftest('pytest_plugins = ["support.flags"]\n')
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert subreaper() is False, "the inner test's subreaper flag survived it"

    # without the plugin the flag stays set for the rest of the session (as it did)
    pytester.makeconftest("")
    pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    try:
        assert subreaper() is True
    finally:
        set_subreaper(False)
