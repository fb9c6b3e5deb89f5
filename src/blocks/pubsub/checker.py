"""Moved to ``blocks.testing.checkers.pubsub``; this module re-exports it so that existing
imports keep working."""

from blocks.testing.checkers.pubsub import CheckResult, Commit, Poll, Send, check_history

__all__ = ["CheckResult", "Commit", "Poll", "Send", "check_history"]
