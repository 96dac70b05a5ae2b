"""The review page: see what tagwatch wrote into each photo, and correct it.

``tagwatch web`` serves it on 127.0.0.1 (``[web]`` in the config; the daemon hosts it too with
``[web] enabled = true``).  Server-rendered: Starlette routes, Jinja2 templates, served by uvicorn;
htmx (vendored under ``static/``) for the few parts that refresh themselves.  Nothing is fetched from
anywhere else.

- ``auth``: the token in the URL (as Jupyter does), the session cookie, the CSRF check
- ``paths``: which photo a URL names, only inside the watched folders
- ``thumbnails``: small upright JPEGs made once with Pillow, cached by content key
- ``library``: what the pages show, read from the store, the files (exiftool) and the tag list
- ``corrections``: a person's corrections into overrides.toml, thresholds into the tag list, and
  applying them when no daemon runs
- ``app``: the routes and templates; ``server``: uvicorn in the foreground or in the daemon
"""
