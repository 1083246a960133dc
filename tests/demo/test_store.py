"""The demo's run store: a run is reused only under exactly its settings and context, and files are whole."""

from __future__ import annotations

import json

from dama.demo.store import RunStore

SETTINGS = {"regime": {"name": "short", "beta": 0.1}, "method": "DPO", "lr": 5e-5, "seed": 0}


def test_a_stored_run_is_found_under_its_settings_only(tmp_path):
    store = RunStore(tmp_path, {"pairs": "abc"})
    assert store.get(SETTINGS) is None
    path = store.put(SETTINGS, {"test": {"CHAIR_i": 12.0}})
    assert path.parent == tmp_path and not list(tmp_path.glob("*.tmp*"))
    assert store.get(dict(SETTINGS)) == {"test": {"CHAIR_i": 12.0}} and store.hits == 1
    assert store.get({**SETTINGS, "lr": 4e-5}) is None
    assert store.get({**SETTINGS, "regime": {"name": "short", "beta": 1.0}}) is None
    # another context (other pairs, another experiment setting) never sees it
    assert RunStore(tmp_path, {"pairs": "abd"}).get(SETTINGS) is None


def test_a_file_whose_contents_disagree_or_do_not_parse_is_not_used(tmp_path):
    store = RunStore(tmp_path, {"pairs": "abc"})
    path = store.put(SETTINGS, {"x": 1})
    stored = json.loads(path.read_text())
    stored["settings"]["seed"] = 1  # a file under this key that holds another run
    path.write_text(json.dumps(stored))
    assert store.get(SETTINGS) is None
    path.write_text('{"context": ')  # a truncated file
    assert store.get(SETTINGS) is None
    store.put(SETTINGS, {"x": 2})  # rerun overwrites it
    assert store.get(SETTINGS) == {"x": 2}


def test_every_method_of_the_study_has_a_colour_in_the_figures():
    from dama.demo.experiment import METHODS
    from dama.demo.report import COLOURS

    assert set(METHODS) <= set(COLOURS)
