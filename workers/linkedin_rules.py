"""LinkedIn conversion rules and campaign associations (seed 003, the steps before streaming).

    rules = RuleManager(settings)
    rules.ensure("li-main")   # every rule in the destination's `rules`, created or updated
    rules.find("li-main")     # the account's rules, as LinkedIn lists them

Calls go through the delivery request path, so they take rate tokens from the same bucket
as the destination's events and use its (refreshed) OAuth token. A refusal raises
`PlatformError` with LinkedIn's words. Names found are remembered in Redis
(`keys.rule_names`), where routes with `rule = "<name>"` look them up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import httpx
import redis

from dispatcher import keys
from dispatcher.errors import DispatcherError
from dispatcher.settings import Destination, LinkedInRule, LinkedInSettings, Settings
from dispatcher.storage import open_store
from workers.adapters import adapter_for
from workers.adapters.base import retry_after_s
from workers.oauth import TokenStore
from workers.request import Failed, NotSent, PlatformClient, RequestPath, Target

RULE_URN = "urn:lla:llaPartnerConversion:"
ACCOUNT_URN = "urn:li:sponsoredAccount:"
CAMPAIGN_URN = "urn:li:sponsoredCampaign:"
CREATE_ONLY = ("account", "conversionMethod")  # a rule keeps these for life
PAGE_SIZE = 100  # rules per finder page
ASSOCIATIONS_PER_CALL = 100  # campaigns per batch association (our choice; LinkedIn states none)
MAX_WAIT_S = 120.0  # how long a management call waits for a rate token before giving up


class PlatformError(DispatcherError):
    """The platform refused a management call; the message is the platform's."""


@dataclass
class Ensured:
    """What `ensure` did with one rule."""

    name: str
    urn: str
    action: str  # created, updated or unchanged
    changed: list[str] = field(default_factory=list)  # fields an update set
    campaigns: int = 0  # campaigns associated by this run


def wanted_fields(rule: LinkedInRule, account: str) -> dict[str, Any]:
    """The rule as LinkedIn's `/rest/conversions` body."""
    return {
        "name": rule.name,
        "account": f"{ACCOUNT_URN}{account}",
        "conversionMethod": "CONVERSIONS_API",
        "type": rule.type,
        "postClickAttributionWindowSize": rule.post_click_days,
        "viewThroughAttributionWindowSize": rule.view_through_days,
        "attributionType": rule.attribution_type,
        "enabled": rule.enabled,
    }


class RuleManager:
    """Rule and campaign management for the LinkedIn destinations of `settings`."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client or open_store(settings)
        self.http = http or PlatformClient()
        self.tokens = TokenStore(self.redis, self.http, settings)
        self.path = RequestPath(
            self.redis, self.http, "rules", settings.max_limiter_wait_s, time.sleep, self.tokens
        )

    # -- the seed's calls -----------------------------------------------------------------

    def find(self, name: str, account: str | None = None) -> list[dict[str, Any]]:
        """Every rule of the ad account (default: the destination's `ad_account_id`)."""
        target, account = self._target(name), self._account(name, account)
        found: list[dict[str, Any]] = []
        while True:
            query = f"q=account&account={quote(ACCOUNT_URN + account, safe='')}"
            page = self._call(target, "GET", f"/rest/conversions?{query}&start={len(found)}"
                              f"&count={PAGE_SIZE}")  # fmt: skip
            elements = page.get("elements", [])
            found += elements
            total = page.get("paging", {}).get("total")
            if not elements or len(elements) < PAGE_SIZE or (total and len(found) >= total):
                break
        self._remember(name, found)
        return found

    def create(self, name: str, rule: LinkedInRule) -> str:
        """Create `rule`; its URN."""
        target = self._target(name)
        query = f"?autoAssociationType={rule.auto_association}" if rule.auto_association else ""
        body = wanted_fields(rule, self._account(name, rule.account))
        answer = self._call(target, "POST", f"/rest/conversions{query}", body)
        if "id" not in answer:
            raise PlatformError("LinkedIn created the rule but named no id (body or x-restli-id)")
        urn = f"{RULE_URN}{answer['id']}"
        self.redis.hset(keys.rule_names(name), rule.name, urn)
        return urn

    def update(self, name: str, rule_id: int | str, changes: dict[str, Any]) -> None:
        """Set `changes` (LinkedIn field names) on an existing rule (Rest.li PARTIAL_UPDATE)."""
        target = self._target(name)
        path = f"/rest/conversions/{str(rule_id).removeprefix(RULE_URN)}"
        self._call(target, "POST", path, {"patch": {"$set": changes}}, "PARTIAL_UPDATE")

    def set_enabled(self, name: str, rule_id: int | str, enabled: bool) -> None:
        """Enable or disable a rule."""
        self.update(name, rule_id, {"enabled": enabled})

    def associate(self, name: str, rule: str, campaigns: list[str]) -> int:
        """Associate campaigns (ids or URNs) with a rule (id or URN) in batch calls."""
        target = self._target(name)
        conversion = f"{RULE_URN}{str(rule).removeprefix(RULE_URN)}"
        urns = [f"{CAMPAIGN_URN}{c.removeprefix(CAMPAIGN_URN)}" for c in campaigns]
        for start in range(0, len(urns), ASSOCIATIONS_PER_CALL):
            chunk = urns[start : start + ASSOCIATIONS_PER_CALL]
            ids = [
                f"(campaign:{quote(c, safe='')},conversion:{quote(conversion, safe='')})"
                for c in chunk
            ]
            entities = {
                key: {"campaign": c, "conversion": conversion}
                for key, c in zip(ids, chunk, strict=True)
            }
            path = f"/rest/campaignConversions?ids=List({','.join(ids)})"
            self._call(target, "PUT", path, {"entities": entities}, "BATCH_UPDATE")
        return len(urns)

    # -- the deployment's step -------------------------------------------------------------

    def ensure(self, name: str) -> list[Ensured]:
        """Make every rule of the destination's `rules` exist as configured and be associated
        with its campaigns: created when the account has no rule of that name, updated when
        a field differs, left alone otherwise. Safe to run on every start."""
        dest = self._destination(name)
        done: list[Ensured] = []
        listed: dict[str, list[dict[str, Any]]] = {}
        for rule in dest.rules:
            account = self._account(name, rule.account)
            if account not in listed:
                listed[account] = self.find(name, account)
            same = [
                r
                for r in listed[account]
                if r.get("name") == rule.name and r.get("conversionMethod") == "CONVERSIONS_API"
            ]
            if not same:
                urn = self.create(name, rule)
                result = Ensured(rule.name, urn, "created")
            else:
                current = min(same, key=lambda r: int(r["id"]))  # the oldest of that name
                wanted = wanted_fields(rule, account)
                changes = {
                    k: v for k, v in wanted.items() if current.get(k) != v and k not in CREATE_ONLY
                }
                urn = f"{RULE_URN}{current['id']}"
                if changes:
                    self.update(name, current["id"], changes)
                result = Ensured(
                    rule.name, urn, "updated" if changes else "unchanged", sorted(changes)
                )
            if rule.campaigns:
                result.campaigns = self.associate(name, urn, rule.campaigns)
            self.redis.hset(keys.rule_names(name), rule.name, urn)
            done.append(result)
        return done

    def close(self) -> None:
        """Release connections."""
        self.http.close()
        self.redis.close()

    def __enter__(self) -> RuleManager:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _destination(self, name: str) -> Destination:
        dest = self.settings.destination(name)
        if dest.platform != "linkedin":
            raise PlatformError(f"destination {name!r} is {dest.platform}, not linkedin")
        return dest

    def _target(self, name: str) -> Target:
        dest = self.tokens.bind(self._destination(name))
        table = self.settings.linkedin
        adapter = adapter_for("linkedin")
        return Target(name, dest, table, adapter, adapter.limits(dest, table))

    def _account(self, name: str, account: str | None) -> str:
        account = (account or self.settings.destination(name).ad_account_id or "").removeprefix(
            ACCOUNT_URN
        )
        if not account:
            raise PlatformError(f"destination {name!r} has no ad_account_id: name an account")
        return account

    def _remember(self, name: str, rules: list[dict[str, Any]]) -> None:
        names: dict[bytes | bytearray | memoryview[int] | str | int | float, str] = {
            str(r["name"]): f"{RULE_URN}{r['id']}"
            for r in sorted(rules, key=lambda r: -int(r["id"]))  # the oldest of a name wins
            if "name" in r and "id" in r
        }
        if names:
            self.redis.hset(keys.rule_names(name), mapping=names)

    def _call(
        self,
        target: Target,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        restli_method: str = "",
    ) -> dict[str, Any]:
        table = cast(LinkedInSettings, target.table)

        def build() -> httpx.Request:
            headers = {
                "Authorization": f"Bearer {target.destination.secret()}",
                "LinkedIn-Version": table.version,
                "X-Restli-Protocol-Version": "2.0.0",
            }
            if restli_method:
                headers["X-RestLi-Method"] = restli_method
            content = None
            if body is not None:
                headers["Content-Type"] = "application/json"
                content = json.dumps(body).encode()
            url = f"{table.base_url.rstrip('/')}{path}"
            return httpx.Request(method, url, headers=headers, content=content)

        deadline = time.monotonic() + MAX_WAIT_S
        while True:
            result = self.path.call(target, build, lambda response: response)
            if isinstance(result, NotSent) and time.monotonic() + result.wait_s < deadline:
                time.sleep(result.wait_s)
                continue
            if isinstance(result, NotSent):
                raise PlatformError(f"no rate token for {target.name} within {MAX_WAIT_S:.0f}s")
            if isinstance(result, Failed):
                raise PlatformError(result.reason)
            wait_s = retry_after_s(result) or 5.0
            if result.status_code == 429 and time.monotonic() + wait_s < deadline:
                time.sleep(wait_s)  # throttled: LinkedIn's limit is the same as delivery's
                continue
            return _answer(result, method, path)


def _answer(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    """LinkedIn's JSON answer (with `id` from `x-restli-id` on a create), or its words."""
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status_code >= 300:
        said = body.get("message") or response.text[:300] or response.reason_phrase
        where = path.partition("?")[0]
        raise PlatformError(f"LinkedIn {response.status_code} on {method} {where}: {said}")
    if "id" not in body and response.headers.get("x-restli-id"):
        body["id"] = response.headers["x-restli-id"]
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:  # a batch call answers 200 with per-key errors
        first = next(iter(errors.values()))
        said = first.get("message", first) if isinstance(first, dict) else first
        raise PlatformError(f"LinkedIn refused {len(errors)} of the batch: {said}")
    return cast(dict[str, Any], body)
