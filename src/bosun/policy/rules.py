"""The policy file: who may call which tool with which arguments, and how often.

```yaml
default: allow            # what happens when no rule matches: allow, deny or ask
rules:
  - id: interns-read-only
    effect: deny          # allow, deny or ask; deny wins over ask, ask over allow
    groups: [interns]     # agents (names) and/or groups; empty means everyone
    servers: [filesystem] # fnmatch patterns; empty means every server
    tools: ["write_*", edit_file]
    when:                 # all must hold; `arg` is a path into the arguments: to, message.to[0]
      - {arg: path, regex: "^/projects/secret/"}
    reason: interns may not write
  - id: fetch-rate
    tools: [fetch]
    rate: {calls: 10, per_seconds: 60}   # per agent and tool; over it, the call is denied
flow:                     # the lethal trifecta: see bosun.policy.flow
  mode: values            # values (default), strict (no send once private and untrusted met), off
  on_violation: deny      # or ask
  labels:                 # replace the catalog's labels of matching tools; later entries win
    - {tools: [mail__read_inbox], labels: [private_data, untrusted_content]}
  destinations:           # which arguments are destinations (default: to, url, account, ... by name)
    - {tools: [bank__pay], args: [iban]}
  known_destinations:     # where private data may go, per agent or group (fnmatch, any case)
    - {groups: [finance], values: ["*@acme.example", "DE44500105175407324931"]}
screening:
  injection: annotate     # off, warn, annotate (delimit the result as data) or withhold
  patterns:               # added to the built-in prompt-injection rules
    - {id: wire-transfer, regex: "(?i)wire the funds"}
  classifier: mypkg.screen:classify   # optional: a function(text) -> [(rule, span), ...]
audit:                    # the audit keeps shapes only, except for these tools (values redacted, capped)
  keep:
    - {tools: [bank__pay], arguments: true, results: true}
```

Errors name the rule (its id, or its position) and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

Effect = Literal["allow", "deny", "ask"]
_PATH = re.compile(r"^\$?\.?[A-Za-z0-9_-]+(\[\d+\]|\.[A-Za-z0-9_-]+)*$")


class PolicyError(ValueError):
    """The policy file is invalid; ``str()`` names each rule and field at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    min: float | None = None
    max: float | None = None


class Condition(_Strict):
    arg: str
    equals: Any = None
    regex: str | None = None
    one_of: list[Any] | None = None
    range: Range | None = None
    present: bool | None = None

    @field_validator("arg")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _PATH.match(v):
            raise ValueError(f"{v!r} is not an argument path (write name, a.b or a.list[0])")
        return v

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regex {v!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = [self.equals is not None, self.regex is not None, self.one_of is not None,
                 self.range is not None, self.present is not None]  # fmt: skip
        if sum(tests) != 1:
            raise ValueError("give exactly one of equals, regex, one_of, range, present")
        return self


class Rate(_Strict):
    calls: int = Field(ge=1)
    per_seconds: float = Field(gt=0)


class _ByCaller(_Strict):
    agents: list[str] = []
    groups: list[str] = []

    def applies_to(self, agent: str, groups: frozenset[str]) -> bool:
        return not (self.agents or self.groups) or agent in self.agents or not groups.isdisjoint(self.groups)


class Rule(_ByCaller):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    effect: Effect = "allow"
    servers: list[str] = []
    tools: list[str] = []
    when: list[Condition] = []
    rate: Rate | None = None
    reason: str = ""


FlowLabel = Literal["private_data", "untrusted_content", "external_send", "destructive"]


class ToolLabels(_Strict):
    tools: list[str] = Field(min_length=1)  # fnmatch on server__tool
    labels: list[FlowLabel]


class DestinationArgs(_Strict):
    tools: list[str] = Field(min_length=1)
    args: list[str] = Field(min_length=1)

    @field_validator("args")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _PATH.match(a)]
        if bad:
            raise ValueError(f"not argument paths: {', '.join(map(repr, bad))} (write name, a.b or a.list[0])")
        return v


class KnownDestinations(_ByCaller):
    values: list[str] = Field(min_length=1)  # fnmatch, compared case-insensitively


def _off(v: Any) -> Any:
    # YAML 1.1 reads a bare `off` as false; whoever wrote `mode: off` meant the word.
    return "off" if v is False else v


class Flow(_Strict):
    # values: argument-level provenance; strict: also no send once private and untrusted data met.
    mode: Annotated[Literal["values", "strict", "off"], BeforeValidator(_off)] = "values"
    on_violation: Literal["deny", "ask"] = "deny"
    labels: list[ToolLabels] = []
    destinations: list[DestinationArgs] = []
    known_destinations: list[KnownDestinations] = []


class InjectionPattern(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    regex: str

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regex {v!r}: {e}") from None
        return v


class Screening(_Strict):
    # What a result that looks like a prompt injection becomes.
    injection: Annotated[Literal["off", "warn", "annotate", "withhold"], BeforeValidator(_off)] = "annotate"
    patterns: list[InjectionPattern] = []
    classifier: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class AuditKeep(_Strict):
    tools: list[str] = Field(min_length=1)
    arguments: bool = False
    results: bool = False


class AuditSettings(_Strict):
    keep: list[AuditKeep] = []


class Policy(_Strict):
    default: Effect = "allow"
    # How long an `ask` waits for a person before it counts as a deny.
    ask_timeout_seconds: float = Field(default=120, gt=0, le=3600)
    # client: ask the calling client's user through MCP elicitation when it supports it, else the CLI;
    # cli: always `bosun approve`/`bosun deny` (for agents whose client could answer for itself).
    ask_through: Literal["client", "cli"] = "client"
    rules: list[Rule] = []
    flow: Flow = Flow()
    screening: Screening = Screening()
    audit: AuditSettings = AuditSettings()

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"two rules have the id {rule.id!r}")
            seen.add(rule.id)
        return self


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        name = rule.get("id") if isinstance(rule, dict) else None
        label = f"rule {name!r} (rules[{loc[1]}])" if name else f"rules[{loc[1]}]"
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:]).lstrip(".")
        return f"{label}: {rest}" if rest else label
    return ".".join(map(str, loc)) or "(file)"


def parse(text: str, origin: str) -> Policy:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise PolicyError(f"{origin}: not valid YAML: {e}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        lines = [f"{origin}: {_where(data, err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                 for err in e.errors()]  # fmt: skip
        raise PolicyError("\n".join(lines)) from None


def load(path: Path) -> Policy:
    """The policy in ``path``; no file means allow everything (and audit it all)."""
    return parse(path.read_text(), str(path)) if path.exists() else Policy()
