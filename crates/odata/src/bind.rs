//! Binding: resolves the names of a syntax tree against the model and type-checks expressions,
//! producing the IR. Nothing after this step can fail because of user input.

use crate::error::{ODataError, syntax, type_error, unknown};
use crate::ir::{BinaryOp, Expand, Expr, Function, Literal, Member, MemberPath, OrderBy, Query, SelectItem, Type};
use crate::syntax::{self, ExpandItem, ExprKind, Name, Options, OrderItem};
use model::{EntityType, PropertyKind};

/// A whole `$filter`, which must be a condition.
pub(crate) fn filter(expr: &syntax::Expr, entity: EntityType) -> Result<Expr, ODataError> {
    let (bound, ty) = bind(expr, entity)?;
    if !matches!(ty, Type::Boolean | Type::Json) {
        let message = format!("the filter must be a boolean expression, not {}", describe(ty));
        return Err(type_error(expr.column, message));
    }
    Ok(bound)
}

pub(crate) fn select(names: &[Name], entity: EntityType) -> Result<Vec<SelectItem>, ODataError> {
    let mut items: Vec<SelectItem> = Vec::new();
    for name in names {
        let item = if is_id(&name.text) {
            SelectItem::Id
        } else if let Some(property) = entity.property(&name.text) {
            SelectItem::Property(property)
        } else if let Some(navigation) = entity.navigation(&name.text) {
            SelectItem::Navigation(navigation)
        } else {
            return Err(unknown(name.column, format!("unknown property `{}` of {entity}", name.text)));
        };
        if !items.contains(&item) {
            items.push(item);
        }
    }
    Ok(items)
}

pub(crate) fn order_by(items: &[OrderItem], entity: EntityType) -> Result<Vec<OrderBy>, ODataError> {
    let mut order = Vec::with_capacity(items.len());
    for item in items {
        let (expr, ty) = bind(&item.expr, entity)?;
        if ty == Type::Boolean {
            return Err(type_error(item.expr.column, "cannot order by a boolean expression"));
        }
        order.push(OrderBy { expr, descending: item.descending });
    }
    Ok(order)
}

/// The items of one `$expand`, merged by navigation property.
pub(crate) fn expand(items: &[ExpandItem], entity: EntityType) -> Result<Vec<Expand>, ODataError> {
    let mut expands = Vec::new();
    for item in items {
        let column = item.path.first().map_or(1, |name| name.column);
        let bound = expand_item(item, entity)?;
        let name = bound.navigation.name;
        merge_expand(&mut expands, bound)
            .map_err(|option| syntax(column, format!("`{name}` is expanded twice with different `{option}`")))?;
    }
    Ok(expands)
}

fn expand_item(item: &ExpandItem, entity: EntityType) -> Result<Expand, ODataError> {
    let mut navigations = Vec::with_capacity(item.path.len());
    let mut target = entity;
    for name in &item.path {
        let navigation = target
            .navigation(&name.text)
            .ok_or_else(|| unknown(name.column, format!("unknown navigation property `{}` of {target}", name.text)))?;
        navigations.push(navigation);
        target = navigation.target;
    }
    let query = options(&item.options, target)?;
    // `A/B(options)` is `A($expand=B(options))`: wrap from the innermost navigation outwards.
    let mut navigations = navigations.into_iter().rev();
    let innermost = navigations.next().ok_or_else(|| syntax(1, "an `$expand` item names no navigation property"))?;
    let mut expand = Expand { navigation: innermost, query };
    for navigation in navigations {
        expand = Expand { navigation, query: Query { expand: vec![expand], ..Query::default() } };
    }
    Ok(expand)
}

/// The options inside the parentheses of an expand item, bound to the navigation's target.
fn options(options: &Options, entity: EntityType) -> Result<Query, ODataError> {
    Ok(Query {
        filter: options.filter.as_ref().map(|f| filter(f, entity)).transpose()?,
        select: options.select.as_deref().map(|names| select(names, entity)).transpose()?,
        expand: match &options.expand {
            Some(items) => expand(items, entity)?,
            None => Vec::new(),
        },
        order_by: match &options.order_by {
            Some(items) => order_by(items, entity)?,
            None => Vec::new(),
        },
        top: options.top,
        skip: options.skip.unwrap_or(0),
        count: options.count,
        result_format: Default::default(),
    })
}

/// Adds `new` to `expands`, merging it into an expand of the same navigation property.
/// Fails with the name of the option both set differently.
fn merge_expand(expands: &mut Vec<Expand>, new: Expand) -> Result<(), &'static str> {
    match expands.iter_mut().find(|e| e.navigation.name == new.navigation.name) {
        Some(existing) => merge_query(&mut existing.query, new.query),
        None => {
            expands.push(new);
            Ok(())
        }
    }
}

fn merge_query(into: &mut Query, from: Query) -> Result<(), &'static str> {
    fn merge<T: PartialEq>(into: &mut Option<T>, from: Option<T>, option: &'static str) -> Result<(), &'static str> {
        match (into.as_ref(), from) {
            (_, None) => Ok(()),
            (None, from) => {
                *into = from;
                Ok(())
            }
            (Some(a), Some(b)) if *a == b => Ok(()),
            (Some(_), Some(_)) => Err(option),
        }
    }
    merge(&mut into.filter, from.filter, "$filter")?;
    merge(&mut into.select, from.select, "$select")?;
    merge(&mut into.top, from.top, "$top")?;
    merge(&mut into.count, from.count, "$count")?;
    let order_by = (!from.order_by.is_empty()).then_some(from.order_by);
    let mut into_order_by = (!into.order_by.is_empty()).then(|| std::mem::take(&mut into.order_by));
    merge(&mut into_order_by, order_by, "$orderby")?;
    into.order_by = into_order_by.unwrap_or_default();
    let skip = (from.skip != 0).then_some(from.skip);
    let mut into_skip = (into.skip != 0).then_some(into.skip);
    merge(&mut into_skip, skip, "$skip")?;
    into.skip = into_skip.unwrap_or(0);
    for expand in from.expand {
        merge_expand(&mut into.expand, expand)?;
    }
    Ok(())
}

fn is_id(name: &str) -> bool {
    name == "id" || name == "@iot.id"
}

/// How a type is named in messages.
fn describe(ty: Type) -> &'static str {
    match ty {
        Type::Boolean => "a boolean",
        Type::Number => "a number",
        Type::String => "a string",
        Type::DateTime => "a date-time",
        Type::Interval => "a time interval",
        Type::Duration => "a duration",
        Type::Geometry => "a geometry",
        Type::Json => "a JSON value",
        Type::Null => "null",
    }
}

/// The word of an infix operator.
pub(crate) fn operator(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::And => "and",
        BinaryOp::Or => "or",
        BinaryOp::Eq => "eq",
        BinaryOp::Ne => "ne",
        BinaryOp::Gt => "gt",
        BinaryOp::Ge => "ge",
        BinaryOp::Lt => "lt",
        BinaryOp::Le => "le",
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Mod => "mod",
    }
}

/// Binds an expression; recursion is bounded by the tree height the parser checked.
fn bind(expr: &syntax::Expr, entity: EntityType) -> Result<(Expr, Type), ODataError> {
    match &expr.kind {
        ExprKind::Literal(literal) => Ok((Expr::Literal(literal.clone()), literal_type(literal))),
        ExprKind::Member(names) => {
            let (path, ty) = member(names, entity)?;
            Ok((Expr::Member(path), ty))
        }
        ExprKind::Not(operand) => {
            let bound = condition(operand, entity, "`not` needs a boolean operand")?;
            Ok((Expr::Not(Box::new(bound)), Type::Boolean))
        }
        ExprKind::Negate(operand) => {
            let (bound, ty) = bind(operand, entity)?;
            let ty = match ty {
                Type::Number | Type::Json => Type::Number,
                Type::Duration => Type::Duration,
                other => {
                    let message = format!("`-` needs a number or a duration, not {}", describe(other));
                    return Err(type_error(operand.column, message));
                }
            };
            Ok((Expr::Negate(Box::new(bound)), ty))
        }
        ExprKind::Chain { op, operands } => {
            let need = format!("`{}` needs boolean operands", operator(*op));
            let bound =
                operands.iter().map(|operand| condition(operand, entity, &need)).collect::<Result<Vec<_>, _>>()?;
            Ok((balanced(*op, bound), Type::Boolean))
        }
        ExprKind::Binary { op, op_column, left, right } => {
            let (left, left_type) = bind(left, entity)?;
            let (right, right_type) = bind(right, entity)?;
            let ty = binary_type(*op, left_type, right_type).map_err(|message| type_error(*op_column, message))?;
            Ok((Expr::Binary { op: *op, left: Box::new(left), right: Box::new(right) }, ty))
        }
        ExprKind::Call { name, args } => call(name, args, entity),
    }
}

/// An operand of `and`, `or` or `not`; `need` says what the operator needs.
fn condition(expr: &syntax::Expr, entity: EntityType, need: &str) -> Result<Expr, ODataError> {
    let (bound, ty) = bind(expr, entity)?;
    if !matches!(ty, Type::Boolean | Type::Json) {
        let message = format!("{need}, not {}", describe(ty));
        return Err(type_error(expr.column, message));
    }
    Ok(bound)
}

/// Joins the operands of an `and`/`or` chain pairwise, round by round, so the tree is about
/// log2(n) deep; both operators are associative, so the shape does not change the meaning.
/// Three operands come out left-associated: `(a or b) or c`.
fn balanced(op: BinaryOp, mut operands: Vec<Expr>) -> Expr {
    while operands.len() > 1 {
        let mut joined = Vec::with_capacity(operands.len().div_ceil(2));
        let mut iter = operands.into_iter();
        while let Some(left) = iter.next() {
            match iter.next() {
                Some(right) => joined.push(Expr::Binary { op, left: Box::new(left), right: Box::new(right) }),
                None => joined.push(left),
            }
        }
        operands = joined;
    }
    operands.pop().unwrap_or(Expr::Literal(Literal::Boolean(op == BinaryOp::And)))
}

fn literal_type(literal: &Literal) -> Type {
    match literal {
        Literal::Null => Type::Null,
        Literal::Boolean(_) => Type::Boolean,
        Literal::Integer(_) | Literal::Number(_) => Type::Number,
        Literal::String(_) => Type::String,
        Literal::DateTime(_) => Type::DateTime,
        Literal::Interval(_) => Type::Interval,
        Literal::Duration(_) => Type::Duration,
        Literal::Geometry(_) => Type::Geometry,
    }
}

fn property_type(kind: PropertyKind) -> Type {
    match kind {
        PropertyKind::Text => Type::String,
        PropertyKind::Object | PropertyKind::Json | PropertyKind::Result => Type::Json,
        PropertyKind::Instant => Type::DateTime,
        PropertyKind::Interval | PropertyKind::InstantOrInterval => Type::Interval,
        PropertyKind::Geometry => Type::Geometry,
    }
}

/// Resolves `Datastream/Thing/name`, `id`, `properties/owner/name`.
fn member(names: &[Name], entity: EntityType) -> Result<(MemberPath, Type), ODataError> {
    let mut hops = Vec::new();
    let mut current = entity;
    for (i, name) in names.iter().enumerate() {
        let rest = names.get(i + 1..).unwrap_or_default();
        let no_members = |next: &Name| unknown(next.column, format!("`{}` has no member `{}`", name.text, next.text));
        if is_id(&name.text) {
            if let Some(next) = rest.first() {
                return Err(no_members(next));
            }
            return Ok((MemberPath { hops, member: Member::Id }, Type::Number));
        }
        if let Some(property) = current.property(&name.text) {
            let ty = property_type(property.kind);
            let member = match (ty, rest.first()) {
                (_, None) => Member::Property(property),
                (Type::Json, Some(_)) => Member::Json { property, path: rest.iter().map(|n| n.text.clone()).collect() },
                (_, Some(next)) => return Err(no_members(next)),
            };
            return Ok((MemberPath { hops, member }, ty));
        }
        if let Some(navigation) = current.navigation(&name.text) {
            if rest.is_empty() {
                let message = format!("`{}` is an entity, not a value", name.text);
                return Err(type_error(name.column, message));
            }
            hops.push(navigation);
            current = navigation.target;
            continue;
        }
        return Err(unknown(name.column, format!("unknown property `{}` of {current}", name.text)));
    }
    Err(syntax(1, "expected a property name"))
}

fn binary_type(op: BinaryOp, left: Type, right: Type) -> Result<Type, String> {
    use Type::*;
    let name = operator(op);
    let mismatch = || format!("`{name}` cannot combine {} and {}", describe(left), describe(right));
    let equality = matches!(op, BinaryOp::Eq | BinaryOp::Ne);
    match op {
        BinaryOp::And | BinaryOp::Or => {
            // The parser builds chains for these; a `Binary` never holds them.
            match (left, right) {
                (Boolean | Json, Boolean | Json) => Ok(Boolean),
                _ => Err(mismatch()),
            }
        }
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => {
            match (left, right) {
                (Null, _) | (_, Null) if equality => Ok(Boolean),
                (Null, _) | (_, Null) => Err(format!("null can only be compared with `eq` or `ne`, not `{name}`")),
                (Geometry, _) | (_, Geometry) if equality => {
                    Err(format!("geometries cannot be compared with `{name}`; use st_equals"))
                }
                (Geometry, _) | (_, Geometry) => Err(format!("geometries cannot be compared with `{name}`")),
                (Json, Duration) | (Duration, Json) => Err(mismatch()),
                (Json, _) | (_, Json) => Ok(Boolean),
                (DateTime | Interval, DateTime | Interval) => Ok(Boolean),
                (a, b) if a == b => Ok(Boolean),
                _ => Err(format!("cannot compare {} with {}", describe(left), describe(right))),
            }
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
            let additive = matches!(op, BinaryOp::Add | BinaryOp::Sub);
            match (left, right) {
                (Number | Json, Number | Json) => Ok(Number),
                (DateTime, Duration) if additive => Ok(DateTime),
                (Duration, DateTime) if op == BinaryOp::Add => Ok(DateTime),
                (DateTime, DateTime) if op == BinaryOp::Sub => Ok(Duration),
                (Duration, Duration) if additive => Ok(Duration),
                _ => Err(mismatch()),
            }
        }
    }
}

/// The kind of value a function parameter takes; a JSON value is accepted for every kind.
#[derive(Clone, Copy)]
enum Param {
    Text,
    Number,
    /// A date-time or an interval.
    Time,
    Geometry,
}

struct Signature {
    name: &'static str,
    function: Function,
    params: &'static [Param],
    /// How many of `params` must be given; the rest are optional.
    required: usize,
    result: Type,
}

const fn sig(name: &'static str, function: Function, params: &'static [Param], result: Type) -> Signature {
    Signature { name, function, params, required: params.len(), result }
}

const S: Param = Param::Text;
const N: Param = Param::Number;
const T: Param = Param::Time;
const G: Param = Param::Geometry;

const FUNCTIONS: &[Signature] = &[
    sig("substringof", Function::SubstringOf, &[S, S], Type::Boolean),
    sig("contains", Function::Contains, &[S, S], Type::Boolean),
    sig("endswith", Function::EndsWith, &[S, S], Type::Boolean),
    sig("startswith", Function::StartsWith, &[S, S], Type::Boolean),
    sig("length", Function::Length, &[S], Type::Number),
    sig("indexof", Function::IndexOf, &[S, S], Type::Number),
    Signature {
        name: "substring",
        function: Function::Substring,
        params: &[S, N, N],
        required: 2,
        result: Type::String,
    },
    sig("tolower", Function::ToLower, &[S], Type::String),
    sig("toupper", Function::ToUpper, &[S], Type::String),
    sig("trim", Function::Trim, &[S], Type::String),
    sig("concat", Function::Concat, &[S, S], Type::String),
    sig("year", Function::Year, &[T], Type::Number),
    sig("month", Function::Month, &[T], Type::Number),
    sig("day", Function::Day, &[T], Type::Number),
    sig("hour", Function::Hour, &[T], Type::Number),
    sig("minute", Function::Minute, &[T], Type::Number),
    sig("second", Function::Second, &[T], Type::Number),
    sig("fractionalseconds", Function::FractionalSeconds, &[T], Type::Number),
    sig("totaloffsetminutes", Function::TotalOffsetMinutes, &[T], Type::Number),
    sig("date", Function::Date, &[T], Type::String),
    sig("time", Function::Time, &[T], Type::String),
    sig("now", Function::Now, &[], Type::DateTime),
    sig("mindatetime", Function::MinDateTime, &[], Type::DateTime),
    sig("maxdatetime", Function::MaxDateTime, &[], Type::DateTime),
    sig("round", Function::Round, &[N], Type::Number),
    sig("floor", Function::Floor, &[N], Type::Number),
    sig("ceiling", Function::Ceiling, &[N], Type::Number),
    sig("geo.distance", Function::GeoDistance, &[G, G], Type::Number),
    sig("geo.length", Function::GeoLength, &[G], Type::Number),
    sig("geo.intersects", Function::GeoIntersects, &[G, G], Type::Boolean),
    sig("st_equals", Function::StEquals, &[G, G], Type::Boolean),
    sig("st_disjoint", Function::StDisjoint, &[G, G], Type::Boolean),
    sig("st_touches", Function::StTouches, &[G, G], Type::Boolean),
    sig("st_within", Function::StWithin, &[G, G], Type::Boolean),
    sig("st_overlaps", Function::StOverlaps, &[G, G], Type::Boolean),
    sig("st_crosses", Function::StCrosses, &[G, G], Type::Boolean),
    sig("st_intersects", Function::StIntersects, &[G, G], Type::Boolean),
    sig("st_contains", Function::StContains, &[G, G], Type::Boolean),
    sig("st_relate", Function::StRelate, &[G, G, S], Type::Boolean),
];

/// The name a function is called by, from the same table that binds calls.
pub(crate) fn function_name(function: Function) -> &'static str {
    FUNCTIONS.iter().find(|signature| signature.function == function).map_or("", |signature| signature.name)
}

fn call(name: &Name, args: &[syntax::Expr], entity: EntityType) -> Result<(Expr, Type), ODataError> {
    let Some(signature) = FUNCTIONS.iter().find(|s| s.name == name.text) else {
        return Err(unknown(name.column, format!("unknown function `{}`", name.text)));
    };
    if args.len() < signature.required || args.len() > signature.params.len() {
        let takes = match (signature.required, signature.params.len()) {
            (0, 0) => "no arguments".to_owned(),
            (1, 1) => "1 argument".to_owned(),
            (n, m) if n == m => format!("{n} arguments"),
            (n, m) => format!("{n} or {m} arguments"),
        };
        let message = format!("`{}` takes {takes}, not {}", signature.name, args.len());
        return Err(type_error(name.column, message));
    }
    let mut bound = Vec::with_capacity(args.len());
    for (i, (arg, param)) in args.iter().zip(signature.params).enumerate() {
        let (expr, ty) = bind(arg, entity)?;
        let fits = match param {
            Param::Text => matches!(ty, Type::String | Type::Json),
            Param::Number => matches!(ty, Type::Number | Type::Json),
            Param::Time => matches!(ty, Type::DateTime | Type::Interval | Type::Json),
            Param::Geometry => matches!(ty, Type::Geometry | Type::Json),
        };
        if !fits {
            let wanted = match param {
                Param::Text => "a string",
                Param::Number => "a number",
                Param::Time => "a date-time",
                Param::Geometry => "a geometry",
            };
            let message = format!("argument {} of `{}` must be {wanted}, not {}", i + 1, signature.name, describe(ty));
            return Err(type_error(name.column, message));
        }
        bound.push(expr);
    }
    Ok((Expr::Call { function: signature.function, args: bound }, signature.result))
}
