"""Designs of YouTube, Uber and ChatGPT assembled from the blocks.

Each design is a package: ``python -m examples.youtube``, ``python -m examples.uber`` and
``python -m examples.chatgpt`` start the blocks it needs on 127.0.0.1, play a short scripted
session printing what happens, and stop everything. ``docs/examples.md`` is the overview; each
package's README.md explains which block plays which role and what the design trades away.
"""
