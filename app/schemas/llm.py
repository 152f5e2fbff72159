"""The /v1 request bodies in OpenAI's wire format. Unknown fields are refused at every depth, so no
request can smuggle a base URL, a key or a provider option past the gateway; types are strict, as OpenAI's
own validation has them ("0.5" is not a number, `true` is not 1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from app.models.usage import MODEL_NAME_LENGTH
from app.schemas.common import MAX_INTEGER, StrictModel

_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# Gemini's adapter carries the model's thought signature inside the tool call id (a few hundred bytes),
# and a client must send that id back unchanged.
_TOOL_CALL_ID_LENGTH = 8192
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_LENGTH)]


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ImageUrl(StrictModel):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(StrictModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(StrictModel):
    name: str = Field(pattern=_FUNCTION_NAME)
    arguments: str


class ToolCall(StrictModel):
    id: str = Field(min_length=1, max_length=_TOOL_CALL_ID_LENGTH)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(StrictModel):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(StrictModel):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(StrictModel):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(StrictModel):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    # Fields of a completion's message that the openai SDK sends back when a caller appends
    # `completion.choices[0].message` to its messages: accepted, and not sent upstream.
    annotations: list[dict[str, Any]] | None = Field(default=None, exclude=True)
    audio: None = Field(default=None, exclude=True)
    function_call: None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _has_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(StrictModel):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str = Field(min_length=1, max_length=_TOOL_CALL_ID_LENGTH)


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(StrictModel):
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _is_object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Providers take a JSON Schema object here; anything else fails upstream with a worse message.
        if value is not None and value.get("type", "object") != "object":
            raise ValueError("function parameters must be a JSON Schema with type 'object'")
        return value


class Tool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(StrictModel):
    name: str = Field(pattern=_FUNCTION_NAME)


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(StrictModel):
    name: str = Field(pattern=_FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(StrictModel):
    type: Literal["text"]


class ResponseFormatJsonObject(StrictModel):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(StrictModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class StreamOptions(StrictModel):
    include_usage: bool | None = None


class ChatParameters(StrictModel):
    """Everything of a chat request but the model: shared by /v1/chat/completions and compare."""

    messages: list[Message] = Field(min_length=1, max_length=2048)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)  # a usage row holds it
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatParameters:
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError("tool_choice names a function that is not in tools")
        return self

    def to_chat(self) -> dict[str, Any]:
        """The validated body as the plain dict adapters translate (unset and null fields left out)."""
        return self.model_dump(exclude_none=True, by_alias=True)


class ChatCompletionRequest(ChatParameters):
    model: ModelName
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class EmbeddingsRequest(StrictModel):
    model: ModelName
    input: str | list[str] = Field(description="A string or a list of up to 2048 strings.")
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or len(items) > 2048:
            raise ValueError("input must hold 1 to 2048 strings")
        if any(not item for item in items):
            raise ValueError("input strings must not be empty")
        return value


class CompareRequest(ChatParameters):
    models: list[ModelName] = Field(min_length=2, max_length=8)

    @field_validator("models")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("models must be distinct")
        return value
