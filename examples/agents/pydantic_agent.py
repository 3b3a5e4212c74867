"""An LLM agent built on pydantic-ai whose tools are modelport's MCP tools (one per served model).

The agent connects with pydantic-ai's ``MCPToolset``; the LLM sees each tool's generated description and JSON
schema, picks the tools, fills in the arguments and explains the predictions.

    pip install "pydantic-ai-slim[mcp,anthropic]"       # or [mcp,openai]
    make demo                                            # in another terminal
    ANTHROPIC_API_KEY=... python examples/agents/pydantic_agent.py
    MODELPORT_AGENT_MODEL=openai:gpt-5-mini OPENAI_API_KEY=... python examples/agents/pydantic_agent.py "question"
    python examples/agents/pydantic_agent.py --test-model    # no key: pydantic-ai's TestModel calls every tool
    MODELPORT_TOKEN=mp_... python examples/agents/pydantic_agent.py   # a server with auth on: a personal access token
"""

from __future__ import annotations

import argparse
import asyncio
import os

from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.models import Model
from pydantic_ai.models.test import TestModel

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
QUESTION = (
    "A customer is 34 years old with a yearly household income of 52,000 EUR, in the consumer segment, prefers the "
    "app channel (and has the app installed), has been a customer for 18 months and places about 8 orders a year of "
    "65 EUR on average. How likely are they to engage with a campaign, what is their lifetime value, and what is "
    "the expected value of targeting them (probability times lifetime value)?"
)
INSTRUCTIONS = (
    "You are a marketing analyst. Answer with the served machine-learning models: call the tools, quote the numbers "
    "they return with their units, and say which model produced each number."
)
_DEFAULT_MODELS = (("ANTHROPIC_API_KEY", "anthropic:claude-sonnet-4-5"), ("OPENAI_API_KEY", "openai:gpt-5-mini"))


def choose_model() -> str | None:
    """``MODELPORT_AGENT_MODEL``, else a default for the first provider whose API key is set, else ``None``."""
    if explicit := os.environ.get("MODELPORT_AGENT_MODEL"):
        return explicit
    return next((model for key, model in _DEFAULT_MODELS if os.environ.get(key)), None)


def build_agent(url: str = DEFAULT_URL, model: Model | str | None = None, token: str | None = None) -> Agent[None, str]:
    """An agent whose toolset is the MCP server at ``url``.

    Args:
        url: the modelport MCP endpoint.
        model: a pydantic-ai model or model name; default ``choose_model()``.
        token: a modelport access token (or OAuth access token) for a server with auth on; default
            ``$MODELPORT_TOKEN``. The agent sees only the models the token may query.
    """
    token = token if token is not None else os.environ.get("MODELPORT_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # modelport's instructions explain the tool shape
    toolset = MCPToolset(url, include_instructions=True, headers=headers)
    chosen = model if model is not None else choose_model()
    if chosen is None:
        raise SystemExit(
            "no LLM configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY (or MODELPORT_AGENT_MODEL), "
            "or pass --test-model"
        )
    return Agent(chosen, toolsets=[toolset], instructions=INSTRUCTIONS)


async def ask(question: str = QUESTION, url: str = DEFAULT_URL, model: Model | str | None = None) -> str:
    """Run the agent once and return its answer."""
    result = await build_agent(url, model).run(question)
    return result.output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--url", default=DEFAULT_URL, help="MCP endpoint (default %(default)s)")
    parser.add_argument(
        "--test-model",
        action="store_true",
        help="no LLM: pydantic-ai's TestModel calls every tool with schema-generated arguments",
    )
    args = parser.parse_args(argv)
    print(asyncio.run(ask(args.question, args.url, TestModel() if args.test_model else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
