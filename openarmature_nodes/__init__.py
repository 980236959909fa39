"""openarmature-nodes: LLM calls as graph nodes.

Subpackages:

- :mod:`openarmature_nodes.llm`: messages, the OpenAI-compatible provider and its transports.
- :mod:`openarmature_nodes.graph`: the typed graph engine (state, reducers, edges, observers).
- :mod:`openarmature_nodes.onion`: the one middleware protocol and its composition function.
- :mod:`openarmature_nodes.context`: the run context the engine and the middleware share.
- :mod:`openarmature_nodes.middleware` (source in the repository's top-level ``middleware/``
  folder): retry, timing, warm-up gate, validation, spans, failure isolation.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
