"""gunicorn settings of a web host of the distributed deployment.

    set -a; . examples/distributed/spacewalk.env; set +a
    gunicorn -c examples/distributed/gunicorn.conf.py

The app reads its Spacewalk settings from the FLASK_SPACEWALK_* variables.
Connections open lazily in each worker process, so preloading is safe.
"""
import os

wsgi_app = "examples.app:app"
bind = os.environ.get("SPACEWALK_BIND", "127.0.0.1:8888")
workers = int(os.environ.get("SPACEWALK_WEB_WORKERS", "2"))
# Threads: a request spends most of its time waiting on PostgreSQL's commit
# and beanstalkd, time another request can use (measured when the PostgreSQL
# backend came: 536 POST/s with sync workers, 937 with these threads; see
# docs/performance.rst).
# A request that waits for a job's result (Prefer: wait=N, a long poll of
# progress) holds one thread for up to SPACEWALK_MAX_WAIT seconds: threads
# is how many such requests a worker holds at once (docs/live.rst).
worker_class = "gthread"
threads = int(os.environ.get("SPACEWALK_WEB_THREADS", "8"))
preload_app = True
# A request that waits on the datastore's busy timeout must not be killed
# before it can answer 503.
timeout = 30
graceful_timeout = 30
accesslog = "-"
