"""ChatGPT from the blocks: streaming chat over the inference engine (see README.md).

``python -m examples.chatgpt`` runs a scripted conversation; ``run_session`` is the same
from code.
"""

from examples.chatgpt.frontend import ChatFrontend, Reply
from examples.chatgpt.session import ChatReport, run_session

__all__ = ["ChatFrontend", "ChatReport", "Reply", "run_session"]
