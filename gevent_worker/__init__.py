"""The production worker class gunicorn loads (`gevent_worker.Worker`): gevent's own HTTP server with
gunicorn's connection rules (gevent_worker/serving.py).

gunicorn's master imports the worker class and builds each worker object before it forks. This class
holds nothing of gevent, so the master does not load gevent (~5.6 MB of RSS that the master would keep
and every sum of the instance's processes would count): the forked child loads it and becomes the
serving worker before it starts.

A package outside app/: the master must not import the app either.
"""

from __future__ import annotations

from gunicorn.workers.base import Worker as _BaseWorker


class Worker(_BaseWorker):
    def init_process(self) -> None:
        from gevent_worker.serving import ServingWorker  # in the child, after the fork

        self.__class__ = ServingWorker
        self.worker_connections = self.cfg.worker_connections  # what AsyncWorker's constructor sets
        self.init_process()
