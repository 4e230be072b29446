"""``fewshot serve``: adapted tasks behind an HTTP service, and a page to teach it classes by dropping photos.

FastAPI and uvicorn (the ``serve`` extra) are imported only by this package and by the ``serve``
command, never when the SDK or another command starts. One file per job: ``settings`` (what the
command was given, and the binding rule), ``limits`` (request size, images, pixels), ``uploads``
(uploaded bytes to images, class names), ``tasks_store`` (tasks as saved task folders, published
atomically), ``answers`` (the JSON of a task and of a ``Prediction``), ``errors`` (the SDK's one-line
errors as 4xx JSON), ``access`` (API key), ``metrics`` (Prometheus text), ``app`` (the routes), and
``page/`` (the static page served at ``/``).
"""
