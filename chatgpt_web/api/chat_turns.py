"""One chat turn of the OpenAI faces on the web backend, with what the backend lacks emulated.

`TurnSpec` is what a face asks for: the messages to send, where they attach, and the emulated
features: function calling (tool_calls.py), structured output (structured_output.py), `stop` and
`max_tokens` (answer_limits.py). `upstream_messages()` puts the features' instructions before the
messages. `finish_turn()` reads a whole answer and shapes it into a `TurnResult`: tool calls, the
JSON alone, or the text cut at its limits. When the answer is not what was asked for, the model
gets one second chance in the same web conversation, told what was wrong; after that, a bad
function call is returned as the text it is, and JSON that cannot be used is an error
(502 `invalid_model_output`, with `x-should-retry: false`: the SDK would only ask again).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import usage
from ..answers import Answer
from ..errors import UpstreamError
from ..upstream.conversation import ChatMessage, ConversationClient, ConversationRequest
from ..upstream.stream import Completion
from .answer_limits import AnswerCutter, cut_text
from .credentials import Grant
from .intake import client_gone
from .model_json import InvalidReply
from .structured_output import OutputFormat
from .tool_calls import ToolCall, Tools, call_json

NO_RETRY = {"x-should-retry": "false"}


@dataclass(frozen=True)
class TurnSpec:
    to_send: tuple[ChatMessage, ...]
    model: str  # the web slug
    conversation_id: str | None = None
    parent_message_id: str | None = None
    timeout: float = 120.0
    tools: Tools | None = None
    output: OutputFormat | None = None
    stops: tuple[str, ...] = ()
    max_tokens: int | None = None
    extra: dict = field(default_factory=dict)
    thinking_effort: str | None = None  # from reasoning_effort (models.thinking_effort)

    @property
    def shaped(self) -> bool:
        """True when the answer must be read whole before it can be given (tools, JSON)."""
        return self.tools is not None or self.output is not None

    @property
    def streams_text_unless_json(self) -> bool:
        """With tools offered but not required (and no JSON format), a text answer can stream as
        it comes: only an answer that begins like JSON is read whole and checked as a call."""
        return self.output is None and self.tools is not None and self.tools.choice == "auto"

    def count_tokens(self, text: str) -> int:
        return usage.count_text(text, self.model)

    def cutter(self) -> AnswerCutter:
        return AnswerCutter(self.stops, self.max_tokens, self.count_tokens)


@dataclass
class TurnResult:
    text: str | None
    tool_calls: list[ToolCall] | None
    finish_reason: str
    completion: Completion

    @property
    def output_text(self) -> str:
        """What the answer gave, for the token count: the text or the calls' arguments."""
        if self.tool_calls:
            return "".join(call.name + call.arguments for call in self.tool_calls)
        return self.text or ""


def assistant_message(result: TurnResult) -> ChatMessage:
    """The answer as the client will send it back in its history, mapped the way
    openai_messages.py maps it (tool calls as the JSON the model is asked to write)."""
    if result.tool_calls:
        return ChatMessage("assistant", call_json(
            [(call.name, json.loads(call.arguments)) for call in result.tool_calls]))
    return ChatMessage("assistant", result.text or "")


def upstream_messages(spec: TurnSpec) -> tuple[ChatMessage, ...]:
    """The turn's messages, after the instructions of its emulated features."""
    instructions = []
    if spec.tools is not None:
        instructions.append(ChatMessage("system", spec.tools.instruction()))
    if spec.output is not None:
        instructions.append(ChatMessage("system", spec.output.instruction()))
    return (*instructions, *spec.to_send)


def start_turn(grant: Grant, client: ConversationClient, spec: TurnSpec) -> Answer:
    """Start the turn upstream. :raise ApiError: it failed before its first item."""
    return grant.start_answer(client, ConversationRequest(
        messages=upstream_messages(spec), model=spec.model,
        conversation_id=spec.conversation_id, parent_message_id=spec.parent_message_id,
        timeout=spec.timeout, extra=dict(spec.extra), thinking_effort=spec.thinking_effort))


def finish_reason_of(completion: Completion) -> str:
    # "max_tokens" survives only when auto-continue was exhausted (conversation.py).
    return "length" if completion.finish_type == "max_tokens" else "stop"


def _shape(spec: TurnSpec, completion: Completion, last_chance: bool) -> TurnResult:
    text = completion.text
    if spec.tools is not None:
        calls = spec.tools.read_answer(text)
        if calls:
            return TurnResult(None, calls, "tool_calls", completion)
    if spec.output is not None:
        return TurnResult(spec.output.read_answer(text, last_chance=last_chance), None,
                          finish_reason_of(completion), completion)
    text, cut = cut_text(text, spec.stops, spec.max_tokens, spec.count_tokens)
    return TurnResult(text, None, cut or finish_reason_of(completion), completion)


def _correction(problem: InvalidReply) -> str:
    return (f"Your answer could not be used: {problem}. Answer again, following the "
            "instructions exactly: only the JSON asked for, nothing else.")


def finish_turn(grant: Grant, client: ConversationClient, spec: TurnSpec,
                answer: Answer) -> TurnResult:
    """Read `answer` whole and shape it, with one second chance (see the module doc).

    :raise UpstreamError: invalid_model_output, when the JSON asked for never came.
    """
    completion = answer.read(abandoned=client_gone)
    try:
        return _shape(spec, completion, last_chance=False)
    except InvalidReply as problem:
        if not completion.conversation_id or not completion.message_id:
            first_problem = problem
        else:
            second = grant.start_answer(client, ConversationRequest(
                messages=(ChatMessage("user", _correction(problem)),), model=spec.model,
                conversation_id=completion.conversation_id,
                parent_message_id=completion.message_id, timeout=spec.timeout,
                extra=dict(spec.extra), thinking_effort=spec.thinking_effort),
                follow_up=True)  # one caller request: its tokens count, not a second request
            completion = second.read(abandoned=client_gone)
            try:
                return _shape(spec, completion, last_chance=True)
            except InvalidReply as again:
                first_problem = again
    if spec.output is not None:
        raise UpstreamError("the model did not answer with the JSON asked for, twice "
                            f"({first_problem})", "invalid_model_output", headers=NO_RETRY)
    # A function call that never came right is given as the text the model wrote.
    text, cut = cut_text(completion.text, spec.stops, spec.max_tokens, spec.count_tokens)
    return TurnResult(text, None, cut or finish_reason_of(completion), completion)
