"""The Casbin model and policy files: loading, validation and the enforcer.

The model (``policies/model.conf``) must have exactly this shape, because the decider
compiles decisions per agency and purpose (see :mod:`gateway.policy.decider`)::

    r = sub, obj, tier, purpose, mode
    p = sub, obj, tier, purpose, mode, eft
    g = _, _
    e = some(where (p.eft == allow)) && !some(where (p.eft == deny))      # deny wins
    m = g(r.sub, p.sub) && r.purpose == p.purpose && ...                  # both required

The matcher may call only ``g`` and ``keyMatch`` (anchored patterns: no ``regexMatch``, whose
patterns match anywhere in a string unless every author remembers ``^...$``), and must be
exactly the matcher of ``policies/model.conf`` up to the order of its terms, white space,
quotes and the order of ``==`` operands: the loader reads every line with that one meaning,
so a matcher that means something else (``keyMatch(p.obj, r.obj)``, no tier term, a literal)
is refused. No other sections (``g2``, ``p2``...) and no role domains.

**Role links.** pycasbin follows at most :data:`MAX_ROLE_DEPTH` links (its
role manager's ``max_hierarchy_level`` less one) and then answers "not held" silently; the
loader reads ``g`` as its transitive closure. So a role cycle, or a role more than
:data:`MAX_ROLE_DEPTH` links below an agency along any chain, is refused at the line that
closes the cycle or crosses the limit.

The policy (``policies/policy.csv``) has two kinds of lines; ``#`` starts a comment::

    g, <agency>, role:<name>          agency (or role) -> role
    p, <sub>, <obj>, <tier>, <purpose>, <mode>, <eft>

* ``sub``: a ``role:`` named as the target of some ``g`` line, or a registered agency id;
* ``obj``: ``*``, ``<dept>/*``, ``<dept>/<dataset>/*`` or ``<dept>/<dataset>/<field>`` (the
  request object is always ``dept/dataset/field``; ``keyMatch`` treats ``*`` as "the rest");
* ``tier``: public | government_shared | commercial_secret | personal_privacy (a grant naming
  state_secret is refused; a deny may name it, harmlessly);
* ``purpose``: a code of ``policies/purposes.toml``;
* ``mode``: free | paid | any;  ``eft``: allow | deny.

Every reference is checked against the catalog, the purposes and the agency registry. A grant
(``allow``) of the state-secret tier, or naming a state-secret field or an Art. 14 prohibited
field, is refused: whatever the policy says, those never leave (and ``decision._legal_block``
withholds them anyway), so a line saying otherwise is a mistake an officer must see at load.
Every refusal is a :class:`~gateway.errors.ConfigError` whose key is ``<file>:<line>``.

Why one module (some 620 lines): the model's shape, the role graph and every policy line
are checked together (a line is valid only against the model's matcher and the role links
that precede it) and the enforcer is built only from what the checks accepted; apart, one
half could change what the other assumes.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import casbin
from casbin.persist import Adapter

from gateway.domain.catalog import Catalog, Tier
from gateway.domain.files import policies_path
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DEFAULT_POLICY_PATH",
    "MAX_ROLE_DEPTH",
    "MODES",
    "ROLE_PREFIX",
    "Grant",
    "PolicySet",
    "RoleLink",
    "load_policy_set",
    "parse_policy_set",
    "subjects_of",
]

DEFAULT_MODEL_PATH = policies_path("model.conf")
DEFAULT_POLICY_PATH = policies_path("policy.csv")

ROLE_PREFIX = "role:"
MODES = ("free", "paid", "any")
EFFECTS = ("allow", "deny")
_TIERS = frozenset(t.value for t in Tier)
_R_TOKENS = ["r_sub", "r_obj", "r_tier", "r_purpose", "r_mode"]
_P_TOKENS = ["p_sub", "p_obj", "p_tier", "p_purpose", "p_mode", "p_eft"]
_DENY_WINS = "some(where (p_eft == allow)) && !some(where (p_eft == deny))"
# Functions the matcher may call: role membership and anchored key patterns.
_ALLOWED_FUNCTIONS = frozenset({"g", "keyMatch"})
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_TOKEN = re.compile(r"^[A-Za-z0-9_:/*.-]+$")
_NAME = re.compile(r"^[a-z0-9_]+$")


#: Held around every call into pycasbin in this process (building a model or an enforcer,
#: enforcing). pycasbin parses matcher expressions with ``ast.parse`` at enforce time, and
#: CPython 3.11's AST constructor keeps its recursion depth in per-interpreter state: two
#: threads parsing at once (a policy activation compiling on a worker thread while a query
#: compiles a decision on the event loop) raise ``SystemError: AST constructor recursion
#: depth mismatch``. Only cache misses call the engine, so the lock is rarely contended.
ENGINE_LOCK = threading.RLock()


def _serialise_ast_parse() -> None:
    """One lock around ``ast.parse`` for the whole process, on the CPython versions with
    the per-interpreter recursion state above. ENGINE_LOCK covers pycasbin, but Python
    3.11 also calls ``ast.parse`` when it formats a traceback (the caret anchors): a
    thread logging an exception while a decision compiles raised the same SystemError
    (seen in the policy hot-switch test). Only ``ast.parse``'s callers wait, and none of
    them is on the query path's cached decisions."""
    import ast
    import sys

    if sys.version_info >= (3, 13) or getattr(ast.parse, "_serialised", False):
        return
    original = ast.parse
    lock = threading.RLock()

    def parse(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(*args, **kwargs)

    parse._serialised = True  # type: ignore[attr-defined]
    parse.__doc__ = original.__doc__
    setattr(ast, "parse", parse)  # noqa: B010 - a module attribute, replaced on purpose


_serialise_ast_parse()


def _engine_hierarchy_limit() -> int:
    """How many role levels pycasbin's default role manager follows (``max_hierarchy_level``,
    10 in pycasbin 1.x): ``has_link`` looks at distances 0 .. limit-1 and then answers "no
    link", silently. Read from the engine itself, so an upgrade that changes it is seen."""
    with ENGINE_LOCK:
        model = casbin.Enforcer.new_model(
            text="[request_definition]\nr = sub, obj\n"
            "[policy_definition]\np = sub, obj\n[role_definition]\ng = _, _\n"
            "[policy_effect]\ne = some(where (p.eft == allow))\n"
            "[matchers]\nm = g(r.sub, p.sub) && r.obj == p.obj\n"
        )
        level = casbin.Enforcer(model).get_role_manager().max_hierarchy_level
    return int(level)


#: The most role links between an agency and a role that the engine still follows.
MAX_ROLE_DEPTH = _engine_hierarchy_limit() - 1


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``p`` line."""

    line: int
    sub: str
    obj: str
    tier: str
    purpose: str
    mode: str
    eft: str

    @property
    def rule(self) -> list[str]:
        """The grant as Casbin's ``p`` row: ``[sub, obj, tier, purpose, mode, eft]``."""
        return [self.sub, self.obj, self.tier, self.purpose, self.mode, self.eft]


@dataclass(frozen=True, slots=True)
class RoleLink:
    """One ``g`` line: ``member`` (an agency or a role) holds ``role``."""

    line: int
    member: str
    role: str


class _RulesAdapter(Adapter):  # type: ignore[misc]
    """Feeds already validated rules to Casbin (read-only)."""

    def __init__(self, p: Sequence[list[str]], g: Sequence[list[str]]) -> None:
        self._p = p
        self._g = g

    def load_policy(self, model: Any) -> None:
        # Appended directly, as Casbin's own file loader does: Model.add_policy checks for
        # duplicates with a linear scan, quadratic over ten thousand lines. Duplicates were
        # removed when the file was parsed.
        model.model["p"]["p"].policy.extend(list(r) for r in self._p)
        model.model["g"]["g"].policy.extend(list(r) for r in self._g)


@dataclass(frozen=True)
class PolicySet:
    """A validated model and policy. ``version`` is the SHA-256 (first 16 hex digits) of the
    model text, the policy text and the catalog digest: two gateways with the same version
    decide alike."""

    model_text: str
    grants: tuple[Grant, ...]
    links: tuple[RoleLink, ...]
    version: str
    source: str = "policy.csv"
    #: Grants by (subject, purpose): what can apply to one role or agency for one purpose.
    by_subject_purpose: Mapping[tuple[str, str], tuple[Grant, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def enforcer(
        self, grants: Iterable[Grant] | None = None, links: Iterable[RoleLink] | None = None
    ) -> casbin.Enforcer:
        """A Casbin enforcer over ``links`` and ``grants`` (default: all of them).

        The decider builds small ones per (agency, purpose); the property tests use the
        whole one as the source of truth.
        """
        chosen = self.grants if grants is None else grants
        chosen_links = self.links if links is None else links
        adapter = _RulesAdapter(
            [g.rule for g in chosen], [[link.member, link.role] for link in chosen_links]
        )
        with ENGINE_LOCK:
            model = casbin.Enforcer.new_model(text=self.model_text)
            return casbin.Enforcer(model, adapter)

    def window(self, agency: str, purpose: str) -> tuple[tuple[Grant, ...], tuple[RoleLink, ...]]:
        """The grants and role links that can decide a request of ``agency`` for ``purpose``.

        Exact for the required model: a line matches only if ``g(agency, line.sub)`` and the
        purposes are equal, and ``g(agency, x)`` follows only links from the agency's roles.
        """
        subjects = subjects_of(self.links, agency)
        grants = tuple(
            g for sub in sorted(subjects) for g in self.by_subject_purpose.get((sub, purpose), ())
        )
        links = tuple(link for link in self.links if link.member in subjects)
        return grants, links


def _check_model(text: str, source: str) -> None:
    try:
        with ENGINE_LOCK:
            model = casbin.Enforcer.new_model(text=text)
        r = model["r"]["r"].tokens
        p = model["p"]["p"].tokens
        effect = model["e"]["e"].value
        matcher: str = model["m"]["m"].value
        has_g = "g" in set(model.keys()) and "g" in model["g"]
    except Exception as exc:  # Casbin raises bare exceptions of many kinds for bad text
        raise ConfigError(source, f"not a usable Casbin model: {exc!r}") from None
    if r != _R_TOKENS:
        raise ConfigError(
            f"{source}:request_definition", "must be r = sub, obj, tier, purpose, mode"
        )
    if p != _P_TOKENS:
        raise ConfigError(
            f"{source}:policy_definition", "must be p = sub, obj, tier, purpose, mode, eft"
        )
    if not has_g:
        raise ConfigError(f"{source}:role_definition", "must define g = _, _")
    if effect != _DENY_WINS:
        raise ConfigError(
            f"{source}:policy_effect",
            "must be some(where (p.eft == allow)) && !some(where (p.eft == deny)) (deny wins)",
        )
    for name in _CALL.findall(matcher):
        if name not in _ALLOWED_FUNCTIONS:
            raise ConfigError(
                f"{source}:matchers",
                f"function {name} is not allowed (only g and keyMatch: anchored patterns)",
            )
    # The decider filters the policy per (agency, purpose) before asking Casbin; that is
    # exact only when a line can match nothing but its own subject's roles and purpose.
    terms = {_normal_term(t) for t in _top_level_and(matcher)}
    if "g(r_sub,p_sub)" not in terms:
        raise ConfigError(f"{source}:matchers", "must require g(r.sub, p.sub) (a top-level &&)")
    if _normal_term("r_purpose==p_purpose") not in terms:
        raise ConfigError(
            f"{source}:matchers", "must require r.purpose == p.purpose (a top-level &&)"
        )
    # The loader reads every policy line with this one meaning (it refuses a field line of
    # another tier as "never matches", checks object patterns for keyMatch, modes for the
    # any-or-equal rule); a matcher that means anything else would be evaluated by Casbin in
    # a way the loader, the decider and the officers' analysis do not understand.
    if terms != _CANONICAL_TERMS:
        raise ConfigError(f"{source}:matchers", f"must be exactly m = {_CANONICAL_MATCHER}")
    sections = {key: sorted(model[key]) for key in set(model.keys())}
    if sections != {"r": ["r"], "p": ["p"], "e": ["e"], "m": ["m"], "g": ["g"]}:
        raise ConfigError(
            f"{source}:sections",
            "only r, p, g, e and m, once each (no r2, p2, g2...: the loader reads no others)",
        )
    if re.sub(r"\s+", "", model["g"]["g"].value) != "_,_":
        raise ConfigError(
            f"{source}:role_definition", "must be g = _, _ (no domains: the loader reads none)"
        )


_CANONICAL_MATCHER = (
    "g(r.sub, p.sub) && r.purpose == p.purpose && r.tier == p.tier && keyMatch(r.obj, p.obj)"
    ' && (p.mode == "any" || p.mode == r.mode)'
)


def _normal_term(term: str) -> str:
    """A matcher term with white space, quotes, outer parentheses, the order of ``==``
    operands and of ``||`` alternatives made canonical, so that equivalent spellings of one
    term compare equal."""
    t = re.sub(r"\s+", "", term).replace("'", '"')
    while t.startswith("(") and t.endswith(")") and _balanced(t[1:-1]):
        t = t[1:-1]
    alternatives = _top_level_split(t, "||")
    if len(alternatives) > 1:
        return "||".join(sorted(_normal_term(a) for a in alternatives))
    if "==" in t and t.count("==") == 1 and "(" not in t:
        left, right = t.split("==")
        return "==".join(sorted((left, right)))
    return t


def _balanced(expr: str) -> bool:
    depth = 0
    for c in expr:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


def _top_level_split(expr: str, op: str) -> list[str]:
    parts: list[str] = []
    depth = start = i = 0
    while i < len(expr):
        c = expr[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and expr.startswith(op, i):
            parts.append(expr[start:i])
            start = i + len(op)
            i += len(op) - 1
        i += 1
    parts.append(expr[start:])
    return parts


def _top_level_and(expr: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(expr):
        c = expr[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and expr.startswith("&&", i):
            terms.append(expr[start:i])
            start = i + 2
            i += 1
        i += 1
    terms.append(expr[start:])
    return terms


_CANONICAL_TERMS = frozenset(
    _normal_term(t) for t in _top_level_and(_CANONICAL_MATCHER.replace(".", "_"))
)


def _check_role_graph(links: Sequence[RoleLink], check: _Checker) -> None:
    """Refuse role links the engine would not follow as the loader does.

    The loader (and :func:`subjects_of`, the decider's windows, the officers' analysis)
    reads ``g`` as its transitive closure. pycasbin follows at most :data:`MAX_ROLE_DEPTH`
    links and then answers "not held" without a word, so a deny on a role 10 links below an
    agency would silently not apply. So: no cycle (a role that holds
    itself through others means nothing, and the engine's answer then hangs on its depth
    limit), and no role more than :data:`MAX_ROLE_DEPTH` links below an agency along any
    chain. The longest chain is measured, not the shortest: a policy whose meaning hangs on
    which of two chains the engine happens to walk first is one no officer can read.

    Raises:
        ConfigError: ``policy.csv:<line>`` of the link that closes a cycle or that puts a
            role one link beyond the limit.
    """
    held: dict[str, list[RoleLink]] = {}
    for link in sorted(links, key=lambda lk: lk.line):
        held.setdefault(link.member, []).append(link)
    # Depth-first over roles in line order: a back edge closes a cycle.
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def text(link: RoleLink) -> str:
        return f"g, {link.member}, {link.role}"

    def visit(node: str) -> None:
        # Iterative, so that a long (refused) chain cannot exhaust Python's recursion limit.
        stack: list[tuple[str, int]] = [(node, 0)]
        state[node] = 1
        while stack:
            current, i = stack[-1]
            out = held.get(current, [])
            if i < len(out):
                stack[-1] = (current, i + 1)
                nxt = out[i].role
                mark = state.get(nxt)
                if mark == 1:
                    raise check.error(
                        out[i].line, text(out[i]), f"a role cycle: {nxt} would hold itself"
                    )
                if mark is None:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                continue
            state[current] = 2
            stack.pop()

    members = [link.member for link in sorted(links, key=lambda lk: lk.line)]
    for member in members:
        if member not in state:
            visit(member)
    for role in sorted({link.role for link in links} - set(members)):
        visit(role)
    # No cycle: longest chains by relaxing links in topological order (Kahn).
    indegree: dict[str, int] = {}
    for link in links:
        indegree[link.role] = indegree.get(link.role, 0) + 1
        indegree.setdefault(link.member, 0)
    ready = sorted(n for n, d in indegree.items() if d == 0)
    depth = dict.fromkeys(ready, 0)  # the longest chain from an agency (0) to each node
    while ready:
        node = ready.pop()
        for link in held.get(node, []):
            if depth[node] + 1 > depth.get(link.role, 0):
                depth[link.role] = depth[node] + 1
            if depth[link.role] > MAX_ROLE_DEPTH:
                raise check.error(
                    link.line,
                    text(link),
                    f"{link.role} is {depth[link.role]} role links below an agency; the policy"
                    f" engine (pycasbin) follows at most {MAX_ROLE_DEPTH} and would then"
                    " silently treat the role as not held",
                )
            indegree[link.role] -= 1
            if indegree[link.role] == 0:
                ready.append(link.role)


class _Checker:
    def __init__(
        self,
        catalog: Catalog,
        purposes: Collection[str],
        agencies: Collection[str] | None,
        source: str,
    ) -> None:
        self.catalog = catalog
        self.purposes = purposes
        self.agencies = agencies
        self.source = source

    def error(self, line: int, text: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}", f"{problem} (in: {text.strip()})")

    def obj(self, line: int, text: str, obj: str, tier: str, eft: str) -> None:
        if obj == "*":
            return
        parts = obj.split("/")
        dept = self.catalog.departments.get(parts[0])
        if dept is None:
            raise self.error(line, text, f"unknown department {parts[0]!r}")
        if len(parts) == 2 and parts[1] == "*":
            return
        if len(parts) != 3 or "*" in parts[0] or "*" in parts[1]:
            raise self.error(
                line,
                text,
                f"object {obj!r} must be *, <dept>/*, <dept>/<dataset>/* or "
                "<dept>/<dataset>/<field>",
            )
        ds = dept.datasets.get(parts[1])
        if ds is None:
            raise self.error(line, text, f"unknown dataset {parts[0]}/{parts[1]}")
        if parts[2] == "*":
            return
        f = ds.fields.get(parts[2])
        if f is None:
            raise self.error(line, text, f"unknown field {obj}")
        if eft == "allow" and f.prohibited:
            raise self.error(
                line, text, f"grants {obj}, an Art. 14 prohibited item, which is never returned"
            )
        if eft == "allow" and f.tier is Tier.STATE_SECRET:
            raise self.error(line, text, f"grants {obj}, a state secret, which never leaves")
        if f.tier.value != tier:
            raise self.error(
                line, text, f"field {obj} is of tier {f.tier.value}, not {tier}: it never matches"
            )


def parse_policy_set(
    model_text: str,
    policy_text: str,
    catalog: Catalog,
    *,
    purposes: Collection[str],
    agencies: Collection[str] | None,
    model_source: str = "model.conf",
    policy_source: str = "policy.csv",
) -> PolicySet:
    """Validate a model and a policy given as text (see the module docstring).

    ``agencies`` is the registered agency ids; ``None`` skips that check (drafts checked
    without a registry).

    Raises:
        ConfigError: the model is not of the required shape (key ``model.conf:<section>``), or
            a policy line is malformed, references an unknown department, dataset, field,
            tier, purpose, agency or role, has a bad mode or effect, grants a prohibited
            item or a state secret, closes a role cycle or puts a role deeper than
            :data:`MAX_ROLE_DEPTH` links below an agency (key ``policy.csv:<line>``).
    """
    _check_model(model_text, model_source)
    check = _Checker(catalog, purposes, agencies, policy_source)
    grants: list[Grant] = []
    links: list[RoleLink] = []
    seen_p: set[tuple[str, ...]] = set()
    seen_g: set[tuple[str, str]] = set()
    for lineno, raw in enumerate(policy_text.splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [t.strip() for t in text.split(",")]
        for t in fields:
            if not _TOKEN.match(t):
                raise check.error(lineno, raw, f"malformed value {t[:40]!r}")
        kind, values = fields[0], fields[1:]
        if kind == "g":
            if len(values) != 2:
                raise check.error(lineno, raw, "a g line is: g, <agency or role>, role:<name>")
            member, role = values
            if not role.startswith(ROLE_PREFIX) or not _NAME.match(role[len(ROLE_PREFIX) :]):
                raise check.error(lineno, raw, f"a role is named role:<name>, not {role!r}")
            if member == role:
                raise check.error(lineno, raw, "a role cannot hold itself")
            if (member, role) not in seen_g:
                seen_g.add((member, role))
                links.append(RoleLink(lineno, member, role))
        elif kind == "p":
            if len(values) != 6:
                raise check.error(
                    lineno, raw, "a p line is: p, <sub>, <obj>, <tier>, <purpose>, <mode>, <eft>"
                )
            sub, obj, tier, purpose, mode, eft = values
            if tier not in _TIERS:
                raise check.error(lineno, raw, f"unknown tier {tier!r}")
            if purpose not in purposes:
                raise check.error(lineno, raw, f"unknown purpose {purpose!r}")
            if mode not in MODES:
                raise check.error(lineno, raw, f"mode must be free, paid or any, not {mode!r}")
            if eft not in EFFECTS:
                raise check.error(lineno, raw, f"effect must be allow or deny, not {eft!r}")
            if eft == "allow" and tier == Tier.STATE_SECRET.value:
                raise check.error(
                    lineno, raw, "grants the state_secret tier, which never leaves its department"
                )
            check.obj(lineno, raw, obj, tier, eft)
            key = tuple(values)
            if key not in seen_p:
                seen_p.add(key)
                grants.append(Grant(lineno, sub, obj, tier, purpose, mode, eft))
        else:
            raise check.error(lineno, raw, f"unknown line type {kind!r} (p or g)")

    roles = {link.role for link in links}
    for link in links:
        if link.member.startswith(ROLE_PREFIX):
            if link.member not in roles:
                raise check.error(
                    link.line, f"g, {link.member}, {link.role}", f"unknown role {link.member}"
                )
        elif agencies is not None and link.member not in agencies:
            raise check.error(
                link.line, f"g, {link.member}, {link.role}", f"unknown agency {link.member!r}"
            )
    _check_role_graph(links, check)
    for grant in grants:
        text = ", ".join(["p", *grant.rule])
        if grant.sub.startswith(ROLE_PREFIX):
            if grant.sub not in roles:
                raise check.error(grant.line, text, f"role {grant.sub} is held by nobody")
        elif agencies is not None and grant.sub not in agencies:
            raise check.error(grant.line, text, f"unknown agency {grant.sub!r}")
    digest = hashlib.sha256()
    for part in (model_text, policy_text, catalog.digest or catalog.version):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    index: dict[tuple[str, str], list[Grant]] = {}
    for grant in grants:
        index.setdefault((grant.sub, grant.purpose), []).append(grant)
    return PolicySet(
        model_text=model_text,
        grants=tuple(grants),
        links=tuple(links),
        version=digest.hexdigest()[:16],
        source=policy_source,
        by_subject_purpose={k: tuple(v) for k, v in index.items()},
    )


def load_policy_set(
    catalog: Catalog,
    *,
    model: Path | None = None,
    policy: Path | None = None,
    purposes: Collection[str],
    agencies: Collection[str] | None,
) -> PolicySet:
    """Read and validate the model and policy files (defaults: ``policies/model.conf`` and
    ``policies/policy.csv``).

    Raises:
        ConfigError: a file cannot be read, or see :func:`parse_policy_set`.
    """
    model = model or DEFAULT_MODEL_PATH
    policy = policy or DEFAULT_POLICY_PATH
    texts: dict[Path, str] = {}
    for path in (model, policy):
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(str(path), "not UTF-8 text") from None
    return parse_policy_set(
        texts[model],
        texts[policy],
        catalog,
        purposes=purposes,
        agencies=agencies,
        model_source=model.name,
        policy_source=policy.name,
    )


def subjects_of(links: Iterable[RoleLink], agency: str) -> frozenset[str]:
    """``agency`` and every role it holds, directly or through other roles."""
    held: dict[str, set[str]] = {}
    for link in links:
        held.setdefault(link.member, set()).add(link.role)
    out = {agency}
    queue = [agency]
    while queue:
        for role in held.get(queue.pop(), ()):
            if role not in out:
                out.add(role)
                queue.append(role)
    return frozenset(out)
