"""PromQL helpers: Grafana macro substitution, syntax-tree walks, and the metrics-contract checks.

Built on promql-parser (the Rust promql-parser's Python binding), so the syntax tree is the one a
Prometheus-compatible parser builds, not a regexp's guess.
"""

import re

import promql_parser as pp

from .metrics import TARGET_LABELS, series

RATE_INTERVAL = "3m17s"  # stands for $__rate_interval (an unusual duration, so it is recognisable)
GRAFANA_MACROS = {
    "$__rate_interval": RATE_INTERVAL,
    "${__rate_interval}": RATE_INTERVAL,
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1h",
    "${__range}": "1h",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
VAR = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")


def substitute(expr, variables):
    """The expression Prometheus would get: Grafana macros replaced; $var only inside strings."""
    problems = []
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    if "$" in STRING.sub('""', expr):
        problems.append(
            "uses a Grafana variable outside a string (only $__rate_interval, $__interval "
            "and $__range may stand for a duration)"
        )
    for m in STRING.finditer(expr):
        for v in VAR.finditer(m.group(0)):
            name = v.group(1) or v.group(2)
            if name not in variables:
                problems.append(f"uses ${name}, which is not a dashboard variable")
    return expr, problems


def children(n):
    if isinstance(n, pp.AggregateExpr):
        return [c for c in (n.param, n.expr) if c is not None]
    if isinstance(n, pp.BinaryExpr):
        return [n.lhs, n.rhs]
    if isinstance(n, pp.Call):
        return list(n.args)
    if isinstance(n, pp.MatrixSelector):
        return [n.vector_selector]
    if isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [n.expr]
    return []


def walk(n, parents=()):
    yield n, parents
    for c in children(n):
        yield from walk(c, parents + (n,))


def selector_name(vs):
    if vs.name:
        return vs.name
    for m in vs.matchers.matchers:
        if m.name == "__name__" and m.op == pp.MatchOp.Equal:
            return m.value
    return None


SCALAR_FUNCS = {"time", "scalar", "pi"}


def out_labels(n):
    """Labels every result series is sure to carry (None for a scalar)."""
    if isinstance(n, (pp.NumberLiteral, pp.StringLiteral)):
        return None
    if isinstance(n, pp.VectorSelector):
        s = series(selector_name(n) or "")
        return TARGET_LABELS | set(s[1]) if s else set(TARGET_LABELS)
    if isinstance(n, pp.MatrixSelector):
        return out_labels(n.vector_selector)
    if isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return out_labels(n.expr)
    if isinstance(n, pp.Call):
        f = n.func.name
        if f in SCALAR_FUNCS:
            return None
        if f in ("vector", "absent", "absent_over_time"):
            return set()
        if f == "histogram_quantile":
            return (out_labels(n.args[1]) or set()) - {"le"}
        if f in ("label_replace", "label_join"):
            return (out_labels(n.args[0]) or set()) | {n.args[1].val}
        for a in n.args:
            labels = out_labels(a)
            if labels is not None:
                return labels
        return None
    if isinstance(n, pp.AggregateExpr):
        inner = out_labels(n.expr) or set()
        op = str(n.op)
        if op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return inner
        mod = n.modifier
        if mod is None:
            result = set()
        elif mod.type == pp.AggModifierType.By:
            result = set(mod.labels)
        else:
            result = inner - set(mod.labels)
        if op == "count_values":
            result.add(n.param.val)
        return result
    if isinstance(n, pp.BinaryExpr):
        lhs, rhs = out_labels(n.lhs), out_labels(n.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op, mod = str(n.op), n.modifier
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return lhs & rhs
        card = mod.card if mod else pp.VectorMatchCardinality.OneToOne
        matching = mod.matching if mod else None
        if card == pp.VectorMatchCardinality.OneToOne:
            if matching is not None and matching.type == pp.LabelModifierType.Include:
                return set(matching.labels)
            if matching is not None:
                return lhs - set(matching.labels)
            return lhs
        if card == pp.VectorMatchCardinality.ManyToOne:
            return lhs | set(mod.group_labels or [])
        return rhs | set(mod.group_labels or [])
    return set()


def contract_problems(expr_ast):
    """Metric names, label names and values, aggregation labels: all within the contract."""
    problems = []
    for n, _ in walk(expr_ast):
        if isinstance(n, pp.VectorSelector):
            name = selector_name(n)
            s = series(name or "")
            if s is None:
                problems.append(f"metric {name!r} is not one the worker exports (nor `up`)")
                continue
            allowed = s[1]
            for m in n.matchers.matchers:
                if m.name == "__name__":
                    continue
                if m.name not in allowed and m.name not in TARGET_LABELS:
                    problems.append(f"{name} has no label {m.name!r}")
                    continue
                values = allowed.get(m.name)
                if values is None or "$" in m.value:
                    continue
                if m.op in (pp.MatchOp.Equal, pp.MatchOp.NotEqual):
                    wanted = [m.value]
                elif re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", m.value):
                    wanted = m.value.split("|")
                else:
                    wanted = []
                for v in wanted:
                    if v not in values:
                        problems.append(
                            f"{name}: {m.name}={v!r} is never exported "
                            f"(values: {', '.join(sorted(values))})"
                        )
        elif (
            isinstance(n, pp.AggregateExpr)
            and n.modifier is not None
            and n.modifier.type == pp.AggModifierType.By
        ):
            have = out_labels(n.expr) or set()
            for label in n.modifier.labels:
                if label not in have:
                    problems.append(
                        f"`{str(n.op)} by ({', '.join(n.modifier.labels)})`: {label!r} is not a "
                        f"label of what it aggregates ({', '.join(sorted(have)) or 'none'})"
                    )
        elif (
            isinstance(n, pp.BinaryExpr)
            and n.modifier is not None
            and n.modifier.matching is not None
            and n.modifier.matching.type == pp.LabelModifierType.Include
        ):
            for side in (n.lhs, n.rhs):
                have = out_labels(side)
                if have is None:
                    continue
                for label in n.modifier.matching.labels:
                    if label not in have:
                        problems.append(
                            f"`on ({', '.join(n.modifier.matching.labels)})`: {label!r} is not a "
                            f"label of {side}"
                        )
        elif isinstance(n, pp.Call):
            f = n.func.name
            if (
                f in ("rate", "irate", "increase", "resets")
                and n.args
                and isinstance(n.args[0], pp.MatrixSelector)
            ):
                s = series(selector_name(n.args[0].vector_selector) or "")
                if s is not None and s[0] in ("gauge", "up"):
                    problems.append(
                        f"{f}() of the gauge {selector_name(n.args[0].vector_selector)}"
                    )
            if f == "histogram_quantile":
                if "le" not in (out_labels(n.args[1]) or set()):
                    problems.append(
                        "histogram_quantile() over a vector without `le` (aggregate `by (le, ...)`)"
                    )
    return problems


def parse(expr):
    try:
        return pp.parse(expr), None
    except Exception as e:  # promql_parser raises ValueError with the parser's message
        return None, str(e)
