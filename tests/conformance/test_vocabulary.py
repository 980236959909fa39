"""The adapters interpret the whole canonical vocabulary of conformance-adapter §4-§5.

The names are read from the spec text itself, not from the fixtures at hand:
every backticked name that opens a bold directive entry (``**`update: ...`**``),
a list item (``- `inner_event_count: <int>```), a ``key: value`` form or the keys
of an inline ``{key: ...}`` form in §5 prose, or a key in a YAML schema block of
§4 / §5. Each must be

- registered by an adapter (:mod:`tests.conformance.vocabulary`), or
- listed below with a reason: :data:`PROSE` (names the text uses that are not
  directives), :data:`PENDING_OTHER_ISSUES` (in-scope parts other issues
  implement: they remove their entries as they register the names), or
  :data:`OUT_OF_SCOPE` (capabilities ``SCOPE.md`` leaves out of this project).

A listed name the spec no longer mentions, or a pending / out-of-scope name an
adapter already registers, fails too, so the lists stay honest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import matchers  # noqa: F401  (registers the value matchers)
from .fixtures import spec_dir
from .test_conformance import under_ci
from .vocabulary import known, load_adapters

SPEC = spec_dir() / "spec" / "conformance-adapter" / "spec.md"

# Names in the directive sections that are prose, placeholders or values, not directives.
PROSE: dict[str, str] = {
    "name": "a generic key (case / invocation / observer / middleware name), read with its owner",
    "<name_X>": "the spelling of the first-occurrence-binding token family (§5.10); any "
    "<word> token binds (tests/conformance/matchers.py)",
}

# In-scope names implemented by other issues; each helper removes its entries as it
# registers them (see tests/conformance/vocabulary.py).
PENDING_OTHER_ISSUES: dict[str, str] = {}

# Capabilities SCOPE.md leaves out of this project (sessions, retrieval-provider,
# prompt-management, Langfuse).
OUT_OF_SCOPE: dict[str, str] = {
    "session_store": "sessions",
    "session_id": "sessions",
    "loaded_session_state": "sessions",
    "saved_session_assertions": "sessions",
    "langfuse_*": "observability: Langfuse mapping",
    "langfuse_client": "observability: Langfuse mapping",
    "calls_embed": "retrieval-provider",
    "calls_rerank": "retrieval-provider",
    "tei_embedding_provider": "retrieval-provider",
    "tei_rerank_provider": "retrieval-provider",
    "jina_embedding_provider": "retrieval-provider",
    "jina_rerank_provider": "retrieval-provider",
    "openai_embedding_provider": "retrieval-provider",
    "cohere_embedding_provider": "retrieval-provider",
    "cohere_rerank_provider": "retrieval-provider",
    "mock_embedding": "retrieval-provider",
    "mock_rerank": "retrieval-provider",
    "no_embed_request_issued": "retrieval-provider",
    "no_rerank_request_issued": "retrieval-provider",
    "chunk_size": "retrieval-provider",
    "document": "retrieval-provider",
    "documents": "retrieval-provider",
    "input": "retrieval-provider",
    "query": "retrieval-provider",
    "top_k": "retrieval-provider",
    "mode": "observability: Langfuse mapping (langfuse_client)",
}

# A bold opening directly on backticked names: **`a: {...}`** or **`a` / `b: {...}`**.
_BOLD = re.compile(r"\*\*(`[^`]+`(?:\s*(?:/|,|or|OR)\s*`[^`]+`)*)")
_TICK = re.compile(r"`([^`]+)`")
# Keys of a mapping written inline in a backticked form: `{a: <int>, b?: ...}`.
_INLINE_KEY = re.compile(r"[{,]\s*([a-z_][a-z0-9_]*)\??:")
_ITEM = re.compile(r"^\s*- `([^`]+)`", re.M)
_FENCE = re.compile(r"```yaml\n(.*?)```", re.S)
_YAML_KEY = re.compile(r"^\s*(?:- )?([a-z_][a-z0-9_]*):", re.M)
_HEAD = re.compile(r"^[\"']?([A-Za-z_<][A-Za-z0-9_.<>*\[\]-]*)")


def _directive_text(text: str) -> str:
    """§4 (fixture schema) and §5 (directive vocabulary) of the adapter spec."""
    start = text.index("\n## 4. ")
    end = text.index("\n## 6. ")
    return text[start:end]


def _normalize(token: str) -> str | None:
    match = _HEAD.match(token.strip())
    if match is None:
        return None
    name = match.group(1).rstrip(".")
    if name.endswith("[]"):
        name = name[:-2]
    if name.startswith("state.fields.<field_name>."):
        name = name.rsplit(".", 1)[1]
    elif name.startswith("expected.") or name.startswith("nodes."):
        return None  # a path naming where a directive goes, not a directive
    elif "." in name and not name.startswith("<"):
        name = name.split(".", 1)[0]  # error.category -> error; call.retry -> call
    if not name or name in ("<int>", "<value>", "<name>"):
        return None
    return name


def spec_names(text: str) -> dict[str, str]:
    """``{name: section}`` of every canonical name in §4-§5."""
    section = "4"
    out: dict[str, str] = {}
    for block in re.split(r"(?m)^(?=###? \d)", _directive_text(text)):
        head = re.match(r"###? (\d+(?:\.\d+)?)", block)
        if head:
            section = head.group(1)
        tokens: list[str] = []
        for bold in _BOLD.findall(block):
            tokens.extend(_TICK.findall(bold))
        tokens.extend(_ITEM.findall(block))
        if not block.startswith(("## 4", "### 4")):  # §4 shows shapes, §5 defines them
            for tick in _TICK.findall(block):
                if tick.lstrip().startswith("{") or re.match(r"^[a-z_]+: \{", tick):
                    tokens.extend(_INLINE_KEY.findall(tick))
                if re.match(r"^[a-z_][a-z0-9_]*: ", tick):  # `key: value` written in prose
                    tokens.append(tick)
        for fence in _FENCE.findall(block):
            tokens.extend(_YAML_KEY.findall(fence))
        for token in tokens:
            name = _normalize(token)
            if name is not None:
                out.setdefault(name, section)
    return out


def _placeholder_probe(name: str) -> str:
    return name.replace("<node_name>", "probe_node")


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    if not SPEC.is_file():
        message = f"conformance-adapter spec not found at {SPEC} (set OPENARMATURE_SPEC_DIR)"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    load_adapters()
    return spec_names(SPEC.read_text(encoding="utf-8"))


def test_every_canonical_name_is_interpreted(names: dict[str, str]) -> None:
    listed = PROSE.keys() | PENDING_OTHER_ISSUES.keys() | OUT_OF_SCOPE.keys()
    missing = sorted(
        f"{name} (§{section})" for name, section in names.items()
        if name not in listed and known(_placeholder_probe(name)) is None
    )
    checked = [n for n in names if n not in listed]
    print(f"\nvocabulary: {len(names)} names in the spec, {len(checked)} canonical names checked "
          f"against the adapters, {len(PENDING_OTHER_ISSUES)} pending other issues, "
          f"{len(OUT_OF_SCOPE)} out of scope, {len(PROSE)} prose")
    assert not missing, f"names no adapter interprets: {missing}"


def test_the_lists_stay_honest(names: dict[str, str]) -> None:
    stale = sorted(n for n in (PROSE.keys() | PENDING_OTHER_ISSUES.keys() | OUT_OF_SCOPE.keys())
                   if n not in names)
    assert not stale, f"listed names the spec no longer mentions: {stale}"
    done = sorted(f"{n} ({PENDING_OTHER_ISSUES.get(n) or OUT_OF_SCOPE.get(n)}: {known(n)})"
                  for n in (PENDING_OTHER_ISSUES.keys() | OUT_OF_SCOPE.keys())
                  if known(n) is not None)
    assert not done, f"registered by an adapter now; remove from the pending lists: {done}"


def test_extraction_finds_the_known_shape() -> None:
    """The extractor itself, on a made-up snippet in the spec's style."""
    text = (
        "\n## 4. Schema\n```yaml\nstate:\n  fields: {}\ninvoke:\n  drain: {}\n```\n"
        "\n## 5. Directives\n### 5.1 Node\n- **`update: {<f>: <v>}`** — a node.\n"
        "- **`jina_a` / `jina_b: {x}`** — two.\n### 5.9 Invariants\n"
        "- `inner_event_count: <int>` — a predicate.\n- **`observers[]`** — list.\n"
        "\n## 6. Harness\n- **`not_me`** — outside.\n"
    )
    got = spec_names(text)
    assert set(got) == {"state", "fields", "invoke", "drain", "update", "jina_a", "jina_b",
                        "inner_event_count", "observers"}, got
    assert got["inner_event_count"] == "5.9"


def test_spec_file_path_is_under_spec_dir() -> None:
    assert Path(SPEC).parts[-3:] == ("spec", "conformance-adapter", "spec.md")
