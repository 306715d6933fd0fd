"""The one error every provider adapter raises.

It says which provider failed, whether trying again could help, and the provider's own message;
never our credentials (adapters build it from the provider's reply, not from their request).
"""
from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, provider: str, message: str, *, status: int | None = None, retryable: bool = False,
                 code: str | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.status = status  # the provider's HTTP status, when there was a reply
        self.retryable = retryable  # a timeout, 429 or 5xx: the same call may succeed later
        self.code = code  # the provider's own error code, when it gives one

    def __repr__(self) -> str:
        return f"ProviderError({self.provider!r}, {self.message!r}, status={self.status}, retryable={self.retryable})"
