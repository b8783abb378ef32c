//! Row filters that do not filter. A DELETE, UPDATE or MERGE action whose
//! row filter (WHERE, join condition, `WHEN MATCHED AND ...`) keeps no row
//! out changes the whole table, however it is spelled. A filter counts as
//! none when, after simple folding, it is true for every row:
//!
//! - literals and casts of literals (`true`, `'t'::bool`, `1::text`),
//!   comparisons and arithmetic of constants (`1 = 1`, `2 > 1`, `1 + 1 = 2`,
//!   `'a' LIKE '%'`), `IN` lists and `BETWEEN` of constants;
//! - an expression compared with itself (`x = x`, `x >= x`, `x IS NOT
//!   DISTINCT FROM x`, `x BETWEEN x AND x`, `x LIKE '%'`), NULL or not: on a
//!   key column it keeps every row; a table joined with itself (`USING t t2
//!   WHERE t.id = t2.id`, `MERGE INTO t USING t s ON t.id = s.id`, `id IN
//!   (SELECT id FROM t)`, `EXISTS (SELECT FROM t t2 WHERE t2.id = t.id)`)
//!   counts as the same expression;
//! - `AND`, `OR`, `NOT`, `IS [NOT] TRUE/FALSE/UNKNOWN`, `CASE`, `COALESCE`
//!   in three-valued logic, with every other sub-condition taken as an
//!   unknown that may be true, false or NULL in each row (so `x IS NULL OR
//!   x IS NOT NULL` and `p OR NOT p IS NOT FALSE` are true for every row,
//!   `p OR NOT p` is not);
//! - `EXISTS (SELECT 1)` and `(SELECT true)` without a FROM.
//!
//! And a filter that names no column of the changed row (`WHERE
//! now() > '2000-01-01'`, `WHERE $1`, `USING u WHERE u.flag`) holds for
//! every row or for none: it is no filter either, unless it folds to false.
//! An unqualified column counts as the row's (it may be).

use pg_query::protobuf::{AExprKind, BoolExprType, BoolTestType, NullTestType, SubLinkType};
use serde_json::Value;

/// Most unknown sub-conditions enumerated (3^n cases); more: not folded.
const MAX_ATOMS: usize = 7;

/// The relation a DELETE, UPDATE or MERGE changes, as its filters name it.
#[derive(Debug, Default)]
pub(super) struct Target {
    /// What qualifies the changed row's columns: its alias, else its name.
    row: Vec<String>,
    /// The same table under other names (joined in, or a subquery of all
    /// of it): their columns compare as the row's own.
    mirrors: Vec<String>,
    /// The table's name, to recognise it under other names.
    relname: String,
}

impl Target {
    /// The target of a statement from its `relation` (a RangeVar, held
    /// directly) and the relations joined in (USING, FROM, MERGE's source).
    pub(super) fn of(relation: Option<&Value>, joined: &[&Value]) -> Target {
        let Some(rel) = relation else {
            return Target::default();
        };
        let relname = str_at(rel, "relname").to_string();
        let alias = rel.pointer("/alias/aliasname").and_then(Value::as_str);
        let mut t = Target {
            row: vec![alias.unwrap_or(&relname).to_string()],
            mirrors: vec![],
            relname,
        };
        for j in joined {
            if let Some(m) = t.mirror_name(j) {
                t.mirrors.push(m);
            }
        }
        t
    }

    /// The name a FROM item goes by when it is this table again: the
    /// table itself, or `(SELECT ... FROM t) AS s` without filter.
    fn mirror_name(&self, item: &Value) -> Option<String> {
        match kind(item)? {
            ("RangeVar", rv) if str_at(rv, "relname") == self.relname => {
                let alias = rv.pointer("/alias/aliasname").and_then(Value::as_str);
                Some(alias.unwrap_or(&self.relname).to_string())
            }
            ("RangeSubselect", rs) => {
                let sub = rs.get("subquery")?;
                self.mirror_select(sub)?;
                rs.pointer("/alias/aliasname")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
            _ => None,
        }
    }

    /// `SELECT ... FROM t [alias]` with no filter, grouping or limit: the
    /// name the table has in it.
    fn mirror_select(&self, node: &Value) -> Option<String> {
        let (k, s) = kind(node)?;
        if k != "SelectStmt" {
            return None;
        }
        let empty = |f: &str| {
            s.get(f)
                .is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        };
        let plain = [
            "where_clause",
            "having_clause",
            "limit_count",
            "limit_offset",
            "group_clause",
            "distinct_clause",
            "with_clause",
        ]
        .iter()
        .all(|f| empty(f))
            && s.get("op").and_then(Value::as_i64).is_none_or(|op| op <= 1);
        let from = s.get("from_clause")?.as_array()?;
        match (plain, from.as_slice()) {
            (true, [only]) => match kind(only)? {
                ("RangeVar", rv) if str_at(rv, "relname") == self.relname => {
                    let alias = rv.pointer("/alias/aliasname").and_then(Value::as_str);
                    Some(alias.unwrap_or(&self.relname).to_string())
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn with_mirror(&self, name: String) -> Target {
        let mut mirrors = self.mirrors.clone();
        mirrors.push(name);
        Target {
            row: self.row.clone(),
            mirrors,
            relname: self.relname.clone(),
        }
    }

    /// Whether `q` (a column reference's qualifier) names this table.
    fn names(&self, q: &str) -> bool {
        self.row.iter().chain(&self.mirrors).any(|n| n == q)
    }
}

/// Whether `cond` keeps some rows of `target` out. `None` (no condition)
/// keeps none.
pub(super) fn filters(cond: Option<&Value>, target: &Target) -> bool {
    let Some(cond) = cond.filter(|c| !c.is_null()) else {
        return false;
    };
    match truth_table(cond, target) {
        Some(Outcome::Always) => false,
        Some(Outcome::Never) => true,
        _ => names_row(cond, target),
    }
}

/// For `WHEN NOT MATCHED BY SOURCE`: whether rows of `target` that the
/// join condition `cond` does *not* match are some and not all.
pub(super) fn filters_unmatched(cond: Option<&Value>, target: &Target) -> bool {
    let Some(cond) = cond.filter(|c| !c.is_null()) else {
        return false;
    };
    match truth_table(cond, target) {
        Some(Outcome::Never) => false,
        Some(Outcome::Always) => true,
        _ => names_row(cond, target),
    }
}

/// How a condition comes out over every row.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// True in every case.
    Always,
    /// Never true.
    Never,
    /// Depends.
    Sometimes,
}

/// Three-valued logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tri {
    True,
    False,
    Null,
}

impl Tri {
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Null => Tri::Null,
        }
    }

    fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::True, Tri::True) => Tri::True,
            _ => Tri::Null,
        }
    }

    fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::False, Tri::False) => Tri::False,
            _ => Tri::Null,
        }
    }

    fn of(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
}

/// Whether `cond` is true in every case, in none, or depends; `None` when
/// it has too many unknowns to enumerate.
fn truth_table(cond: &Value, target: &Target) -> Option<Outcome> {
    let mut f = Fold {
        target,
        atoms: Vec::new(),
        assign: Vec::new(),
    };
    f.truth(cond);
    if f.atoms.len() > MAX_ATOMS {
        return None;
    }
    let sizes: Vec<usize> = f.atoms.iter().map(|a| if a.1 { 2 } else { 3 }).collect();
    let total: usize = sizes.iter().product();
    let (mut always, mut ever) = (true, false);
    for case in 0..total {
        let mut rest = case;
        f.assign = sizes
            .iter()
            .map(|s| {
                let v = rest % s;
                rest /= s;
                [Tri::True, Tri::False, Tri::Null]
                    .get(v)
                    .copied()
                    .unwrap_or(Tri::Null)
            })
            .collect();
        let t = f.truth(cond);
        always &= t == Tri::True;
        ever |= t == Tri::True;
    }
    Some(if always {
        Outcome::Always
    } else if !ever {
        Outcome::Never
    } else {
        Outcome::Sometimes
    })
}

/// Whether `cond` is true for every row of `target` (a tautology).
fn always_true(cond: &Value, target: &Target) -> bool {
    truth_table(cond, target) == Some(Outcome::Always)
}

/// One folding pass: unknown sub-conditions are atoms, looked up by shape.
struct Fold<'a> {
    target: &'a Target,
    /// (expression, two-valued: a NULL test).
    atoms: Vec<(&'a Value, bool)>,
    /// This case's value of each atom (empty while collecting them).
    assign: Vec<Tri>,
}

impl<'a> Fold<'a> {
    fn atom(&mut self, e: &'a Value, two_valued: bool) -> Tri {
        let i = match self
            .atoms
            .iter()
            .position(|(a, t)| *t == two_valued && same(a, e, self.target))
        {
            Some(i) => i,
            None => {
                self.atoms.push((e, two_valued));
                self.atoms.len() - 1
            }
        };
        self.assign.get(i).copied().unwrap_or(Tri::Null)
    }

    /// The value of a condition in this case.
    fn truth(&mut self, e: &'a Value) -> Tri {
        if let Some(c) = constant(e) {
            return c.truth();
        }
        let Some((k, b)) = kind(e) else {
            return self.atom(e, false);
        };
        match k {
            "BoolExpr" => {
                let args: Vec<Tri> = list(b, "args").iter().map(|a| self.truth(a)).collect();
                let op = b.get("boolop").and_then(Value::as_i64).unwrap_or(0);
                if op == BoolExprType::AndExpr as i64 {
                    args.into_iter().fold(Tri::True, Tri::and)
                } else if op == BoolExprType::OrExpr as i64 {
                    args.into_iter().fold(Tri::False, Tri::or)
                } else if op == BoolExprType::NotExpr as i64 {
                    args.first().copied().unwrap_or(Tri::Null).not()
                } else {
                    self.atom(e, false)
                }
            }
            "NullTest" => {
                let Some(arg) = b.get("arg") else {
                    return self.atom(e, false);
                };
                let is_null = if let Some(c) = constant(arg) {
                    Tri::of(c == Const::Null)
                } else if self.maybe_row(arg) {
                    // A row is neither NULL nor NOT NULL when only some of its fields are.
                    return self.atom(e, false);
                } else {
                    self.atom(arg, true)
                };
                let t = b.get("nulltesttype").and_then(Value::as_i64).unwrap_or(0);
                if t == NullTestType::IsNotNull as i64 {
                    is_null.not()
                } else {
                    is_null
                }
            }
            "BooleanTest" => {
                let v = match b.get("arg") {
                    Some(a) => self.truth(a),
                    None => Tri::Null,
                };
                let t = b.get("booltesttype").and_then(Value::as_i64).unwrap_or(0);
                let is = |want: Tri| Tri::of(v == want);
                match t {
                    t if t == BoolTestType::IsTrue as i64 => is(Tri::True),
                    t if t == BoolTestType::IsNotTrue as i64 => is(Tri::True).not(),
                    t if t == BoolTestType::IsFalse as i64 => is(Tri::False),
                    t if t == BoolTestType::IsNotFalse as i64 => is(Tri::False).not(),
                    t if t == BoolTestType::IsUnknown as i64 => is(Tri::Null),
                    t if t == BoolTestType::IsNotUnknown as i64 => is(Tri::Null).not(),
                    _ => self.atom(e, false),
                }
            }
            "CaseExpr" if b.get("arg").is_none_or(Value::is_null) => {
                let mut out = None;
                for w in list(b, "args") {
                    let Some(("CaseWhen", cw)) = kind(w) else {
                        return self.atom(e, false);
                    };
                    let cond = cw.get("expr").map(|c| self.truth(c)).unwrap_or(Tri::Null);
                    let result = cw.get("result").map(|r| self.truth(r)).unwrap_or(Tri::Null);
                    if out.is_none() && cond == Tri::True {
                        out = Some(result);
                    }
                }
                let default = match b.get("defresult").filter(|d| !d.is_null()) {
                    Some(d) => self.truth(d),
                    None => Tri::Null,
                };
                out.unwrap_or(default)
            }
            "CoalesceExpr" => {
                let args: Vec<Tri> = list(b, "args").iter().map(|a| self.truth(a)).collect();
                args.into_iter()
                    .find(|t| *t != Tri::Null)
                    .unwrap_or(Tri::Null)
            }
            "AExpr" => match self.compare(b) {
                Some(t) => t,
                None => self.atom(e, false),
            },
            "SubLink" => match self.sublink(b) {
                Some(t) => t,
                None => self.atom(e, false),
            },
            _ => self.atom(e, false),
        }
    }

    /// Whether `e` may be a whole row (`t`, `t.*`, `ROW(...)`).
    fn maybe_row(&self, e: &Value) -> bool {
        match kind(e) {
            Some(("RowExpr", _)) => true,
            Some(("ColumnRef", c)) => {
                let fields = fields(c);
                fields.last().is_some_and(|f| f == "*")
                    || (fields.len() == 1
                        && fields
                            .first()
                            .is_some_and(|f| self.target.names(f) || *f == self.target.relname))
            }
            _ => false,
        }
    }

    /// A comparison, IN, BETWEEN, LIKE or DISTINCT test that folds.
    fn compare(&mut self, b: &'a Value) -> Option<Tri> {
        let k = b.get("kind").and_then(Value::as_i64)?;
        let op = op_name(b);
        let l = b.get("lexpr")?;
        let r = b.get("rexpr")?;
        if k == AExprKind::AexprOp as i64 {
            return self.binary(op.as_str(), l, r);
        }
        if k == AExprKind::AexprDistinct as i64 || k == AExprKind::AexprNotDistinct as i64 {
            let distinct = if same(l, r, self.target) && stable(l) {
                false
            } else {
                match (constant(l)?, constant(r)?) {
                    (Const::Null, Const::Null) => false,
                    (Const::Null, _) | (_, Const::Null) => true,
                    (a, c) => a.cmp_with(&c, "<>")? == Tri::True,
                }
            };
            return Some(Tri::of(distinct == (k == AExprKind::AexprDistinct as i64)));
        }
        if k == AExprKind::AexprIn as i64 {
            // `x IN (a, b)`: op `=`; `x NOT IN (...)`: op `<>`.
            let items = kind(r)
                .filter(|(k, _)| *k == "List")
                .map(|(_, l)| list(l, "items"))?;
            let parts: Vec<Option<Tri>> = items
                .iter()
                .map(|i| self.binary(op.as_str(), l, i))
                .collect();
            let (init, comb): (Tri, fn(Tri, Tri) -> Tri) = if op == "=" {
                (Tri::False, Tri::or)
            } else {
                (Tri::True, Tri::and)
            };
            if op == "=" && parts.contains(&Some(Tri::True)) {
                return Some(Tri::True);
            }
            return parts
                .into_iter()
                .try_fold(init, |acc, p| Some(comb(acc, p?)));
        }
        let between = [
            (AExprKind::AexprBetween, false),
            (AExprKind::AexprBetweenSym, false),
            (AExprKind::AexprNotBetween, true),
            (AExprKind::AexprNotBetweenSym, true),
        ];
        if let Some((_, negated)) = between.iter().find(|(kk, _)| *kk as i64 == k) {
            let bounds = kind(r)
                .filter(|(k, _)| *k == "List")
                .map(|(_, l)| list(l, "items"))?;
            let (lo, hi) = (bounds.first()?, bounds.get(1)?);
            let lo_t = self.binary(">=", l, lo)?;
            let hi_t = self.binary("<=", l, hi)?;
            let t = lo_t.and(hi_t);
            return Some(if *negated { t.not() } else { t });
        }
        if k == AExprKind::AexprLike as i64 || k == AExprKind::AexprIlike as i64 {
            let negated = op.starts_with('!');
            let t = match constant(r)? {
                Const::Str(p) if !p.is_empty() && p.chars().all(|c| c == '%') && stable(l) => {
                    Tri::True
                }
                Const::Null => Tri::Null,
                Const::Str(p) => match constant(l)? {
                    Const::Null => Tri::Null,
                    Const::Str(s) if k == AExprKind::AexprLike as i64 => Tri::of(like(&s, &p)),
                    Const::Str(s) => Tri::of(like(&s.to_lowercase(), &p.to_lowercase())),
                    _ => return None,
                },
                _ => return None,
            };
            return Some(if negated { t.not() } else { t });
        }
        None
    }

    /// `l op r` when it folds: the same expression on both sides, or constants.
    fn binary(&self, op: &str, l: &Value, r: &Value) -> Option<Tri> {
        if same(l, r, self.target) && stable(l) {
            return match op {
                "=" | "<=" | ">=" => Some(Tri::True),
                "<>" | "!=" | "<" | ">" => Some(Tri::False),
                _ => None,
            };
        }
        constant(l)?.cmp_with(&constant(r)?, op)
    }

    fn sublink(&mut self, b: &'a Value) -> Option<Tri> {
        let t = b.get("sub_link_type").and_then(Value::as_i64)?;
        let sub = b.get("subselect")?;
        let (k, s) = kind(sub)?;
        if k != "SelectStmt" {
            return None;
        }
        let no_from = s
            .get("from_clause")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        let absent = |f: &str| s.get(f).is_none_or(Value::is_null);
        let unlimited = absent("limit_count") && absent("limit_offset") && absent("having_clause");
        if t == SubLinkType::ExistsSublink as i64 {
            if no_from && absent("where_clause") && unlimited {
                return Some(Tri::True);
            }
            // EXISTS (SELECT FROM t t2 WHERE t2.id = t.id): every row finds itself.
            let name = self.target.mirror_select_filtered(sub)?;
            let inner = self.target.with_mirror(name);
            let w = s.get("where_clause").filter(|w| !w.is_null());
            return match w {
                None => None,
                Some(w) if unlimited && always_true(w, &inner) => Some(Tri::True),
                Some(_) => None,
            };
        }
        if t == SubLinkType::ExprSublink as i64 && no_from && absent("where_clause") && unlimited {
            let targets = list(s, "target_list");
            let [only] = targets else { return None };
            let val = only.pointer("/node/ResTarget/val")?;
            return constant(val).map(|c| c.truth());
        }
        if t == SubLinkType::AnySublink as i64 && op_list_is_eq(b) {
            // `id IN (SELECT id FROM t)`: every row's id is there.
            let test = b.get("testexpr")?;
            let name = self.target.mirror_select(sub)?;
            let targets = list(s, "target_list");
            let [only] = targets else { return None };
            let val = only.pointer("/node/ResTarget/val")?;
            let inner = self.target.with_mirror(name);
            if same(test, val, &inner) && stable(test) {
                return Some(Tri::True);
            }
        }
        None
    }
}

impl Target {
    /// Like `mirror_select`, but the subquery may have a WHERE (checked by the caller).
    fn mirror_select_filtered(&self, node: &Value) -> Option<String> {
        let (k, s) = kind(node)?;
        if k != "SelectStmt" {
            return None;
        }
        let from = s.get("from_clause")?.as_array()?;
        let [only] = from.as_slice() else { return None };
        let grouped = s
            .get("group_clause")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        match kind(only)? {
            ("RangeVar", rv) if str_at(rv, "relname") == self.relname && !grouped => {
                let alias = rv.pointer("/alias/aliasname").and_then(Value::as_str);
                Some(alias.unwrap_or(&self.relname).to_string())
            }
            _ => None,
        }
    }
}

fn op_list_is_eq(b: &Value) -> bool {
    let names = list(b, "oper_name");
    names.is_empty()
        || names
            .last()
            .and_then(|n| n.pointer("/node/String/sval"))
            .and_then(Value::as_str)
            == Some("=")
}

/// Whether `cond` names a column of the changed row (or cannot say).
fn names_row(cond: &Value, target: &Target) -> bool {
    match cond {
        Value::Object(map) => {
            if map.contains_key("CurrentOfExpr") {
                return true;
            }
            if let Some(c) = map.get("ColumnRef") {
                let f = fields(c);
                return match f.as_slice() {
                    [] => true,
                    [_] => true,
                    [.., q, _] => target.row.iter().any(|n| n == q),
                };
            }
            map.values().any(|v| names_row(v, target))
        }
        Value::Array(items) => items.iter().any(|v| names_row(v, target)),
        _ => false,
    }
}

/// A folded constant.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
}

impl Const {
    /// As a condition (`WHERE 't'` is true: an unknown literal is read as bool).
    fn truth(&self) -> Tri {
        match self {
            Const::Null => Tri::Null,
            Const::Bool(b) => Tri::of(*b),
            Const::Str(s) => match parse_bool(s) {
                Some(b) => Tri::of(b),
                None => Tri::Null,
            },
            // `WHERE 1` is an error in PostgreSQL: nothing runs.
            Const::Int(_) | Const::Num(_) => Tri::Null,
        }
    }

    fn cmp_with(&self, other: &Const, op: &str) -> Option<Tri> {
        use std::cmp::Ordering;
        let ord: Option<Ordering> = match (self, other) {
            (Const::Null, _) | (_, Const::Null) => return Some(Tri::Null),
            (Const::Int(a), Const::Int(b)) => Some(a.cmp(b)),
            (Const::Int(a), Const::Num(b)) => (*a as f64).partial_cmp(b),
            (Const::Num(a), Const::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Const::Num(a), Const::Num(b)) => a.partial_cmp(b),
            (Const::Bool(a), Const::Bool(b)) => Some(a.cmp(b)),
            // An unknown-typed literal takes the other side's type.
            (Const::Int(_) | Const::Num(_), Const::Str(s)) => {
                return self.cmp_with(&number(s)?, op);
            }
            (Const::Str(s), Const::Int(_) | Const::Num(_)) => {
                return number(s)?.cmp_with(other, op);
            }
            (Const::Bool(_), Const::Str(s)) => {
                return self.cmp_with(&Const::Bool(parse_bool(s)?), op);
            }
            (Const::Str(s), Const::Bool(_)) => {
                return Const::Bool(parse_bool(s)?).cmp_with(other, op);
            }
            // Text order depends on the collation: only equality folds.
            (Const::Str(a), Const::Str(b)) => {
                return match op {
                    "=" => Some(Tri::of(a == b)),
                    "<>" | "!=" => Some(Tri::of(a != b)),
                    _ => None,
                };
            }
            _ => None,
        };
        let o = ord?;
        Some(Tri::of(match op {
            "=" => o == Ordering::Equal,
            "<>" | "!=" => o != Ordering::Equal,
            "<" => o == Ordering::Less,
            "<=" => o != Ordering::Greater,
            ">" => o == Ordering::Greater,
            ">=" => o != Ordering::Less,
            _ => return None,
        }))
    }
}

fn number(s: &str) -> Option<Const> {
    let s = s.trim();
    s.parse::<i64>().map(Const::Int).ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Const::Num)
    })
}

/// PostgreSQL's boolean input (`t`, `yes`, `on`, `1`, unique prefixes).
fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    let prefix = |word: &str, min: usize| s.len() >= min && word.starts_with(&s);
    if prefix("true", 1) || prefix("yes", 1) || s == "on" || s == "1" {
        Some(true)
    } else if prefix("false", 1) || prefix("no", 1) || prefix("off", 2) || s == "0" {
        Some(false)
    } else {
        None
    }
}

/// SQL LIKE with `%` and `_` (backslash escapes the next character).
fn like(s: &str, p: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| s.get(i..).is_some_and(|t| go(t, rest))),
            Some(('_', rest)) => s.split_first().is_some_and(|(_, t)| go(t, rest)),
            Some(('\\', rest)) => match (rest.split_first(), s.split_first()) {
                (Some((pc, prest)), Some((sc, srest))) => pc == sc && go(srest, prest),
                _ => false,
            },
            Some((pc, rest)) => s
                .split_first()
                .is_some_and(|(sc, t)| sc == pc && go(t, rest)),
        }
    }
    let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
    // Patterns long enough to make the naive match slow are not folded.
    p.len() <= 64 && s.len() <= 256 && go(&s, &p)
}

/// The constant an expression folds to.
pub(super) fn constant(e: &Value) -> Option<Const> {
    let (k, b) = kind(e)?;
    match k {
        "AConst" => {
            if b.get("isnull").and_then(Value::as_bool) == Some(true) {
                return Some(Const::Null);
            }
            let v = b.get("val")?;
            if let Some(i) = v.pointer("/Ival/ival").and_then(Value::as_i64) {
                Some(Const::Int(i))
            } else if let Some(f) = v.pointer("/Fval/fval").and_then(Value::as_str) {
                number(f)
            } else if let Some(x) = v.pointer("/Boolval/boolval").and_then(Value::as_bool) {
                Some(Const::Bool(x))
            } else {
                v.pointer("/Sval/sval")
                    .and_then(Value::as_str)
                    .map(|s| Const::Str(s.to_string()))
            }
        }
        "TypeCast" => {
            let c = constant(b.get("arg")?)?;
            let ty = b
                .pointer("/type_name/names")
                .and_then(Value::as_array)
                .and_then(|n| n.last())
                .and_then(|n| n.pointer("/node/String/sval"))
                .and_then(Value::as_str)?;
            let array = b
                .pointer("/type_name/array_bounds")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if array {
                return None;
            }
            match (ty, c) {
                (_, Const::Null) => Some(Const::Null),
                ("bool", Const::Str(s)) => parse_bool(&s).map(Const::Bool),
                ("bool", Const::Int(i)) => Some(Const::Bool(i != 0)),
                ("bool", b @ Const::Bool(_)) => Some(b),
                ("int2" | "int4" | "int8", Const::Str(s)) => s.trim().parse().ok().map(Const::Int),
                ("int2" | "int4" | "int8", i @ Const::Int(_)) => Some(i),
                ("numeric" | "float4" | "float8", Const::Str(s)) => number(&s),
                ("numeric" | "float4" | "float8", n @ (Const::Int(_) | Const::Num(_))) => Some(n),
                ("text" | "varchar" | "bpchar" | "name", Const::Str(s)) => Some(Const::Str(s)),
                ("text" | "varchar", Const::Int(i)) => Some(Const::Str(i.to_string())),
                ("text" | "varchar", Const::Bool(b)) => Some(Const::Str(b.to_string())),
                _ => None,
            }
        }
        "AExpr" if b.get("kind").and_then(Value::as_i64) == Some(AExprKind::AexprOp as i64) => {
            let op = op_name(b);
            let r = constant(b.get("rexpr")?)?;
            let l = b.get("lexpr").filter(|l| !l.is_null());
            let Some(l) = l else {
                return match (op.as_str(), r) {
                    ("-", Const::Int(i)) => i.checked_neg().map(Const::Int),
                    ("-", Const::Num(n)) => Some(Const::Num(-n)),
                    ("+", n @ (Const::Int(_) | Const::Num(_))) => Some(n),
                    _ => None,
                };
            };
            let l = constant(l)?;
            match (op.as_str(), l, r) {
                (_, Const::Null, _) | (_, _, Const::Null) => Some(Const::Null),
                ("||", Const::Str(a), Const::Str(b)) => Some(Const::Str(a + &b)),
                ("+", Const::Int(a), Const::Int(b)) => a.checked_add(b).map(Const::Int),
                ("-", Const::Int(a), Const::Int(b)) => a.checked_sub(b).map(Const::Int),
                ("*", Const::Int(a), Const::Int(b)) => a.checked_mul(b).map(Const::Int),
                ("=" | "<>" | "!=" | "<" | "<=" | ">" | ">=", a, b) => match a.cmp_with(&b, &op)? {
                    Tri::True => Some(Const::Bool(true)),
                    Tri::False => Some(Const::Bool(false)),
                    Tri::Null => Some(Const::Null),
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// The string an expression folds to (`'DELETE ' || 'FROM t'`).
pub(super) fn string_constant(e: &Value) -> Option<String> {
    match constant(e)? {
        Const::Str(s) => Some(s),
        _ => None,
    }
}

/// The last part of an operator's name.
fn op_name(b: &Value) -> String {
    list(b, "name")
        .last()
        .and_then(|n| n.pointer("/node/String/sval"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An expression whose value is the same each time it is computed in a
/// row: no calls, subqueries or anything volatile, only columns,
/// parameters, constants and operators over them.
fn stable(e: &Value) -> bool {
    match e {
        Value::Object(map) => {
            if ["FuncCall", "SubLink", "SQLValueFunction", "RowExpr"]
                .iter()
                .any(|k| map.contains_key(*k))
            {
                return false;
            }
            map.values().all(stable)
        }
        Value::Array(items) => items.iter().all(stable),
        _ => true,
    }
}

/// Whether two expressions are the same, ignoring where they were written
/// and taking the target's mirrors for the target.
fn same(a: &Value, b: &Value, target: &Target) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if let (Some(ca), Some(cb)) = (x.get("ColumnRef"), y.get("ColumnRef")) {
                return same_column(&fields(ca), &fields(cb), target);
            }
            let keys =
                |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != "location").count();
            keys(x) == keys(y)
                && x.iter()
                    .filter(|(k, _)| *k != "location")
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, target)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w, target))
        }
        _ => a == b,
    }
}

fn same_column(a: &[String], b: &[String], target: &Target) -> bool {
    if a == b {
        return true;
    }
    // `t.id` and `t2.id` where both name the target table.
    match (a, b) {
        ([.., qa, ca], [.., qb, cb]) => ca == cb && target.names(qa) && target.names(qb),
        ([ca], [.., qb, cb]) | ([.., qb, cb], [ca]) => ca == cb && target.names(qb),
        _ => false,
    }
}

/// A ColumnRef's fields (`*` for A_Star).
fn fields(c: &Value) -> Vec<String> {
    list(c, "fields")
        .iter()
        .map(|f| {
            f.pointer("/node/String/sval")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string()
        })
        .collect()
}

/// `{"node": {"Kind": body}}` as (Kind, body).
pub(super) fn kind(v: &Value) -> Option<(&str, &Value)> {
    let n = v.get("node")?.as_object()?;
    let (k, b) = n.iter().next()?;
    Some((k.as_str(), b))
}

fn list<'v>(v: &'v Value, field: &str) -> &'v [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn str_at<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}
