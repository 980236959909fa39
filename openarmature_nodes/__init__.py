"""openarmature-nodes: LLM calls as graph nodes.

Subpackages:

- :mod:`openarmature_nodes.llm`: messages, the OpenAI-compatible provider and its transports.
- :mod:`openarmature_nodes.graph`: the typed graph engine (state, reducers, edges, observers).
- :mod:`openarmature_nodes.onion`: the one middleware protocol and its composition function.
- :mod:`middleware` (a sibling top-level package): retry, timing, warm-up gate, validation, spans.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
