"""What both clients are configured with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientSettings:
    api_url: str | None
    gateway_url: str | None
    api_key: str | None
    timeout: float
    retries: int
    max_retry_wait: float
    time_column: str

    def headers(self) -> dict[str, str]:
        return {} if self.api_key is None else {"Authorization": f"Bearer {self.api_key}"}

    def urls(self) -> dict[str, str]:
        urls = {"api": self.api_url, "gateway": self.gateway_url}
        return {name: url.rstrip("/") for name, url in urls.items() if url}

    def missing(self, service: str) -> str:
        name = "api_url" if service == "api" else "gateway_url"
        return f"this client has no {name}: pass it to reach the {service}"

    def __repr__(self) -> str:  # never the key
        return (
            f"ClientSettings(api_url={self.api_url!r}, gateway_url={self.gateway_url!r}, "
            f"api_key={'***' if self.api_key else None})"
        )
