"""What gunicorn.conf.py does in each worker once it has loaded the app."""

from __future__ import annotations

import gc
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.services import lifecycle

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture
def post_worker_init(monkeypatch):
    monkeypatch.setattr("dotenv.load_dotenv", lambda *args, **kwargs: None)  # no .env in the test process
    # pytest's own SIGTERM handling stays.
    monkeypatch.setattr(lifecycle, "install_drain_handler", lambda worker, delay: None)
    yield runpy.run_path(str(CONF))["post_worker_init"]
    gc.unfreeze()


def test_objects_alive_when_the_worker_starts_are_left_out_of_later_collections(post_worker_init):
    gc.unfreeze()
    module_object = lifecycle.keep_startup_objects_out_of_gc
    post_worker_init(SimpleNamespace(wsgi=None))
    assert gc.get_freeze_count() > 10_000  # the modules, classes and functions loaded so far
    assert not any(obj is module_object for obj in gc.get_objects())  # frozen: no generation holds it
    later = [object()]
    assert any(obj is later for obj in gc.get_objects())  # what comes after is still collected
