"""Signals for content the model did not get from its user: tool results and retrieved documents.

A web page or a tool's output has no business telling the agent what to do — call a tool, put a
token in every answer, act before replying. The same words in a user's own prompt are ordinary
("call my_function with 3"), so these signals apply only to ``tool`` and ``function`` messages.
RE2 patterns (linear time), each weighted; two together reach a block at the default threshold.
"""

from __future__ import annotations

from opsgate.guard.linear_re import compile_linear

_SIGNALS = (
    # A tool named as code is called on the agent's behalf: "call delete_file on …", "use send_email to …".
    (
        "tool_call_request",
        0.6,
        compile_linear(
            r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?`?[a-z][a-z0-9]*_[a-z0-9_]+`?(?:\s+tool)?"
            r"\s+(?:on|with|to|for|and)\b",
            ignore_case=True,
        ),
    ),
    # Timing aimed at the agent: "before you reply", "before responding", "for all future tasks".
    (
        "agent_timing",
        0.45,
        compile_linear(
            r"\bbefore\s+(?:you\s+)?(?:reply|respond|answer|replying|responding|answering|continuing)\b"
            r"|\bfor all future (?:tasks|requests|conversations|answers|replies)\b"
            r"|\b(?:ai|coding|llm)\s+agents?\b",
            ignore_case=True,
        ),
    ),
    # Something to be planted in the agent's answers: "include … in your summary", "at the end of every response".
    (
        "answer_tampering",
        0.6,
        compile_linear(
            r"\b(?:include|append|add|insert|put|mention)\b[^.\n]{0,80}\b(?:in|to|into|at the end of)\s+"
            r"(?:your|every|each|any|all)\s+(?:summary|summaries|response|responses|reply|replies|answer|answers"
            r"|report|reports|output)\b"
            r"|\b(?:end|start|begin)\s+(?:of\s+)?(?:every|each|any|all)\s+(?:response|reply|answer|summary)"
            r"|\b(?:in|to|into)\s+(?:every|each|all)\s+(?:summary|summaries|response|responses|reply|replies|answer"
            r"|answers|report|reports)\s+(?:you|for|from|of)\b",
            ignore_case=True,
        ),
    ),
    # Orders dressed as the system's inside fetched content: "<system>…</system>", "[SYSTEM OVERRIDE]", "(system: …",
    # "[Automated system note]", "<!-- hidden instruction …". A tool result has no system to speak for.
    (
        "planted_markup",
        0.9,
        compile_linear(
            r"<\s*(?:system|sys|admin|administrator|developer|instructions?|system_?(?:prompt|message|note"
            r"|instruction))\s*>|\[\s*(?:system|admin|developer|sys)[ _-]*(?:override|note|instruction|message|prompt"
            r"|command|update)\s*\]|\(\s*system\s*:|<!--\s*(?:hidden|secret|ai|assistant|system)"
            r"|\[\s*(?:automated\s+)?system\s+(?:note|message|notice)\s*\]",
            ignore_case=True,
        ),
    ),
    # Data leaving: "send this summary to x@y", "post the result to https://…".
    (
        "send_out",
        0.45,
        compile_linear(
            r"\b(?:send|post|forward|upload|email|submit)\b[^.\n]{0,60}\bto\s+(?:\S+@\S+\.\w+|https?://)",
            ignore_case=True,
        ),
    ),
)


def agent_directed_score(text: str) -> tuple[float, list[str]]:
    """Combined score (``1 - Π(1 - w)``) and names of the signals found."""
    fired = [(name, weight) for name, weight, pattern in _SIGNALS if pattern.search(text) is not None]
    remaining = 1.0
    for _, weight in fired:
        remaining *= 1.0 - weight
    return 1.0 - remaining, [name for name, _ in fired]
