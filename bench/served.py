"""The WSGI app bench/requests.py serves: `/bare` a minimal Flask app, everything else Vigil.

One gunicorn serves both, so that the bare endpoint is the ceiling an authenticated Vigil
request is compared with in the same run. Vigil is configured from the environment.
"""

from __future__ import annotations

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from backend import create_app
from bare import bare

app = DispatcherMiddleware(create_app(), {"/bare": bare})
