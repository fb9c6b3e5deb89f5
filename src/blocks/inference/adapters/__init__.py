"""The ``blocks.inference`` API on servers users already run: ``blocks.inference.adapters.
openai`` (any OpenAI-compatible server, through the official ``openai`` client) and
``openai_batch`` (the step-driven ``BatchEngine`` over it). Import the module itself; this
package imports nothing, so a missing client library breaks nothing else."""

__all__: list[str] = []
