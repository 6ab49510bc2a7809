"""``awt serve``: the classifier as an HTTP service (one model kept warm, requests batched together).

A front end over the library, like the command line: the library never imports it. Its parts:
:mod:`~awt.serve.settings` (limits, and how an error maps to a status), :mod:`~awt.serve.batcher`
(the bounded queue and the one thread that owns the model), :mod:`~awt.serve.engine` (a batch of
uploads into results, through the library's stages), :mod:`~awt.serve.class_sets` (class sets
registered once, by id), :mod:`~awt.serve.metrics`, :mod:`~awt.serve.middleware` and
:mod:`~awt.serve.app` (the ASGI application), and ``page/`` (the web page, package data).

The serving libraries are the optional extra ``serve`` (``pip install 'awt[serve]'``); this module
imports none of them, so the command can say which is missing.
"""

from __future__ import annotations

import importlib.util

#: import name -> the package that provides it
REQUIRED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart",
            "prometheus_client": "prometheus-client"}


def missing_packages() -> list[str]:
    """The packages of the ``serve`` extra that are not installed."""
    return [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
