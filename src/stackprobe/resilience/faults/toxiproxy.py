"""Network faults through Toxiproxy (Shopify's), over its HTTP API and the one HTTP layer:
latency with jitter, timeout, reset_peer, bandwidth as toxics on the service's proxy, and
`down`/`up` by disabling and enabling the proxy (new connections refused, open ones cut).

Toxics are named with the run's prefix, so `clear` removes exactly the ones this run (or,
from `stackprobe scenario restore`, any stackprobe run) added; a user's own toxics stay.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from stackprobe.check import CheckContext, CheckSkipped
from stackprobe.config import ToxiproxyRef
from stackprobe.http import expect_json, plain_client, raise_unless
from stackprobe.ids import PREFIX
from stackprobe.resilience.model import Fault

LABEL = "toxiproxy"


class Toxiproxy:
    """One Toxiproxy's API for one proxy."""

    def __init__(self, ref: ToxiproxyRef) -> None:
        self.ref = ref
        self.path = f"/proxies/{quote(ref.proxy, safe='')}"

    async def _call(
        self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200, 204)
    ) -> Any:
        async with plain_client(self.ref.api) as http:
            answer = raise_unless(await http.request(method, path, json=json), ok, label=LABEL)
            return expect_json(answer, ok=ok, label=LABEL) if answer.content else None

    async def proxy(self) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("GET", self.path)
        return found

    async def add_toxic(self, name: str, kind: str, attributes: dict[str, int]) -> None:
        body = {
            "name": name,
            "type": kind,
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": attributes,
        }
        await self._call("POST", f"{self.path}/toxics", json=body)

    async def remove_toxics(self, prefix: str) -> list[str]:
        """Remove the toxics whose names start with `prefix`; their names."""
        removed = []
        for toxic in (await self.proxy()).get("toxics") or []:
            name = str(toxic.get("name", ""))
            if name.startswith(prefix):
                await self._call(
                    "DELETE", f"{self.path}/toxics/{quote(name, safe='')}", ok=(200, 204, 404)
                )
                removed.append(name)
        return removed

    async def enable(self, enabled: bool) -> None:
        await self._call("POST", self.path, json={"enabled": enabled})


def toxiproxy_of(ctx: CheckContext[object], service: str) -> Toxiproxy:
    ref = ctx.stack.service(service).toxiproxy
    if ref is None:
        raise CheckSkipped(
            f"{service}: network faults go through Toxiproxy: give the service `toxiproxy: "
            "{api, proxy}` (on the sandbox: stackprobe sandbox up --proxy " + service + ")"
        )
    return Toxiproxy(ref)


class ToxiproxyInjector:
    name: str = "toxiproxy"
    actions: tuple[str, ...] = (
        "latency",
        "timeout",
        "reset-peer",
        "bandwidth",
        "down",
        "up",
        "clear",
    )

    async def apply(self, ctx: CheckContext[object], fault: Fault) -> str:
        proxy = toxiproxy_of(ctx, fault.service)
        where = f"{fault.service} (proxy {proxy.ref.proxy})"
        if fault.action == "down":
            await proxy.enable(False)
            return f"proxy disabled in front of {where}"
        if fault.action == "up":
            await proxy.enable(True)
            return f"proxy enabled in front of {where}"
        if fault.action == "clear":
            removed = await proxy.remove_toxics(ctx.ns)
            return f"removed {len(removed)} toxic(s) from {where}"
        toxics: dict[str, tuple[str, dict[str, int], str]] = {
            "latency": ("latency", {"latency": round(fault.latency_ms), "jitter": round(fault.jitter_ms)}, f"{fault.latency_ms:g} ms latency (±{fault.jitter_ms:g} ms)"),
            "timeout": ("timeout", {"timeout": round(fault.timeout_ms)}, f"timeout toxic ({fault.timeout_ms:g} ms)"),
            "reset-peer": ("reset_peer", {"timeout": round(fault.timeout_ms)}, "connections reset (TCP RST)"),
            "bandwidth": ("bandwidth", {"rate": fault.rate_kbps}, f"bandwidth {fault.rate_kbps} KB/s"),
        }  # fmt: skip
        toxic, attributes, said = toxics[fault.action]
        await proxy.add_toxic(f"{ctx.ns}{fault.action}", toxic, attributes)
        return f"{said} on {where}"


def ours(name: str) -> bool:
    """A toxic some stackprobe run added (what `scenario restore` may remove)."""
    return name.startswith(PREFIX)
