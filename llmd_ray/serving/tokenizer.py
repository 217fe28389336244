"""Prompt rendering at the ingress: chat template and tokenization, done once.

Routing needs token ids (prefix-cache block hashes are over tokens), and the
engine should not tokenize again, so the ingress turns every request into
prompt token ids here and checks them against the model's context length.
"""

from __future__ import annotations

from typing import Any

from llmd_ray.errors import InvalidRequestError, PromptTooLongError
from llmd_ray.serving.protocol import ChatMessage


class PromptRenderer:
    """Turns OpenAI prompts and messages into token ids with the model's tokenizer."""

    def __init__(self, tokenizer: Any, max_model_len: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = len(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str, max_model_len: int | None) -> "PromptRenderer":
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        if max_model_len is None:
            max_model_len = int(getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", 2048))
        return cls(tokenizer, max_model_len)

    def render_completion(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            bad = next((t for t in prompt if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(f"prompt: token id {bad} is outside the vocabulary", param="prompt")
            ids = list(prompt)
        return self._check(ids, "prompt")

    def render_chat(self, messages: list[ChatMessage]) -> list[int]:
        conversation = [{"role": m.role, "content": m.text()} for m in messages]
        try:
            ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        except Exception as e:  # template errors are the request's fault (e.g. role order)
            raise InvalidRequestError(f"messages: cannot apply the chat template: {e}", param="messages") from e
        if hasattr(ids, "keys"):  # newer transformers may return a BatchEncoding
            ids = ids["input_ids"]
        return self._check(list(ids), "messages")

    def _check(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise InvalidRequestError(f"{param}: renders to no tokens", param=param)
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"{param}: prompt is {len(ids)} tokens, but the model's context (max_model_len) is "
                f"{self.max_model_len} tokens and at least one must be left to generate",
                param=param,
            )
        return ids

    def output_budget(self, prompt_len: int, max_tokens: int | None, param: str = "max_tokens") -> int:
        """``max_tokens`` checked against the room left in the context."""
        room = self.max_model_len - prompt_len
        if max_tokens is None:
            return room
        if max_tokens > room:
            raise PromptTooLongError(
                f"{param}: prompt ({prompt_len} tokens) + {param} ({max_tokens}) exceeds max_model_len "
                f"({self.max_model_len}); at most {room} tokens can be generated",
                param=param,
            )
        return max_tokens
