"""The demo's console (`dama.demo.console`): the libraries' bars and known warnings are off inside `quiet_libraries`
only, and every setting is back as it was on exit, so `dama train` (or anything run after the demo in the same
process) keeps them. What a real `dama demo` prints is checked through the CLI in test_study_resume.py."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest
from datasets.utils.tqdm import are_progress_bars_disabled as datasets_bars_off
from huggingface_hub.utils import are_progress_bars_disabled as hub_bars_off
from transformers.utils import logging as transformers_logging

from dama.demo.console import KNOWN_WARNINGS, quiet_libraries


def bar_state() -> tuple[bool, bool, bool]:
    return transformers_logging.is_progress_bar_enabled(), not hub_bars_off(), not datasets_bars_off()


KNOWN = "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing`."


def test_inside_the_bars_are_off_and_only_the_known_warnings_are_ignored():
    assert bar_state() == (True, True, True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")  # what a fresh process shows (pytest's own filters ignore FutureWarning)
        with quiet_libraries():
            assert bar_state() == (False, False, False)
            warnings.warn(KNOWN, FutureWarning, stacklevel=1)
            warnings.warn("some other deprecation", FutureWarning, stacklevel=1)  # not known: still shown
        warnings.warn(KNOWN, FutureWarning, stacklevel=1)  # outside: shown again
    assert [str(w.message) for w in caught] == ["some other deprecation", KNOWN]
    assert bar_state() == (True, True, True)
    assert all(category is FutureWarning for category, _ in KNOWN_WARNINGS)


def test_every_setting_is_restored_after_an_error_inside():
    filters = list(warnings.filters)
    with pytest.raises(RuntimeError, match="a stage failed"), quiet_libraries():
        raise RuntimeError("a stage failed")
    assert bar_state() == (True, True, True)
    assert warnings.filters == filters


def test_settings_made_before_are_kept():
    transformers_logging.disable_progress_bar()  # a caller that had turned the bars off keeps them off
    try:
        with quiet_libraries():
            pass
        assert not transformers_logging.is_progress_bar_enabled() and hub_bars_off()
    finally:
        transformers_logging.enable_progress_bar()
    assert bar_state() == (True, True, True)


def test_importing_the_demo_changes_nothing():
    """Only the demo's entry point silences anything: importing its modules (as `dama train` never does, but a
    notebook might) leaves the bars and warnings on."""
    code = (
        "import warnings\n"
        "import matplotlib.pyplot, dama.train  # the libraries under the demo set their own filters at import\n"
        "filters = list(warnings.filters)\n"
        "from transformers.utils import logging\n"
        "for name in ('dama.demo.cli', 'dama.demo.console', 'dama.demo.experiment', 'dama.demo.report'):\n"
        "    __import__(name)\n"
        "assert logging.is_progress_bar_enabled(), 'bars off at import'\n"
        "assert warnings.filters == filters, 'warning filters changed at import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    importlib.import_module("dama.demo.cli")
    assert bar_state() == (True, True, True)
